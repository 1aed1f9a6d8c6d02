"""Checks of the model bundle and the trainer on this device: integrity, backend and providers, a micro
training benchmark with loss parity against the manifest's reference.

Loss parity: `fedlora export` records the untouched bundle's eval loss on a fixed batch
(`export.onnx_graph.example_batch(batch_size=2, seq_len=16, vocab_size=V, seed=1234)`). That batch comes
from torch's RNG, which cannot be reproduced without torch, and a device install has no torch. So with
torch importable the exact batch is rebuilt and the loss must match within 1e-4; without torch the check
evaluates a fixed numpy batch and requires a finite loss (the detail `parity` says which was done).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from hardware_tests.context import DiagContext
from hardware_tests.result import CheckResult, failed, passed, skipped, warned

logger = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4
REFERENCE_BATCH = {"batch_size": 2, "seq_len": 16, "seed": 1234}
BENCH_BATCH_SIZE = 2
BENCH_SEQ_LEN = 32
BENCH_LEARNING_RATE = 1e-4
IGNORE_INDEX = -100


def check_bundle(ctx: DiagContext) -> CheckResult:
    """Every bundle file matches its sha256 in manifest.json (`fl_protocol.manifest.load_manifest`)."""
    if ctx.config is None:
        return skipped("bundle", "no device config: no bundle configured")
    from fl_protocol.manifest import BundleError, load_manifest

    bundle_dir = ctx.config.device.bundle_dir
    try:
        manifest = load_manifest(bundle_dir, verify=True)
    except BundleError as exc:
        return failed("bundle", str(exc), bundle_dir=str(bundle_dir))
    return passed(
        "bundle",
        f"{len(manifest.raw['files'])} files verified, bundle {manifest.bundle_id[:12]}",
        bundle_dir=str(bundle_dir),
        bundle_id=manifest.bundle_id,
        model=manifest.raw["model"].get("source"),
        trainable_values=manifest.total_length,
    )


def check_trainer(ctx: DiagContext) -> CheckResult:
    """A real training session on the bundle: which backend and which execution providers it gets."""
    if ctx.config is None:
        return skipped("trainer", "no device config: no bundle configured")
    try:
        trainer = ctx.trainer()
    except RuntimeError as exc:
        return failed("trainer", f"cannot build a trainer: {exc}")
    details = {
        "backend": trainer.backend_name,
        "providers": list(trainer.providers),
        "selection_reason": trainer.selection_reason,
        "requested": {
            "backend": ctx.config.device.backend,
            "compute_device": ctx.config.device.compute_device,
        },
    }
    summary = f"{trainer.backend_name} on {', '.join(trainer.providers)}"
    if trainer.backend_name == "torch":
        return warned(
            "trainer",
            f"{summary}: ONNX Runtime training unavailable, torch fallback in use "
            "(slower, more memory; see docs/install.md)",
            **details,
        )
    return passed("trainer", summary, **details)


def torch_reference_batch(vocab_size: int) -> dict[str, np.ndarray] | None:
    """The manifest's reference batch, rebuilt exactly as `export.onnx_graph.example_batch` does.

    Needs torch (its RNG); returns None without it. Kept in step with export by a unit test.
    """
    try:
        import torch
    except ImportError:
        return None
    batch_size, seq_len = REFERENCE_BATCH["batch_size"], REFERENCE_BATCH["seq_len"]
    gen = torch.Generator().manual_seed(REFERENCE_BATCH["seed"])
    input_ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, seq_len // 2 :] = 0
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
    return {
        "input_ids": input_ids.numpy(),
        "attention_mask": attention_mask.numpy(),
        "labels": labels.numpy(),
    }


def numpy_batch(vocab_size: int, *, batch_size: int, seq_len: int, seed: int) -> dict[str, np.ndarray]:
    """A fixed synthetic batch (numpy's RNG is fine here: nothing private, only a load to measure)."""
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(0, vocab_size, size=(batch_size, seq_len), dtype=np.int64)
    attention_mask = np.ones_like(input_ids)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": input_ids.copy()}


def _parity(trainer: Any, expected: float | None, vocab_size: int) -> tuple[str | None, dict[str, Any]]:
    """Eval loss of the untouched model; (problem or None, details)."""
    batch = torch_reference_batch(vocab_size)
    if batch is None:
        loss = trainer.evaluate([numpy_batch(vocab_size, batch_size=2, seq_len=16, seed=1234)])
        details = {"parity": "not checked (torch absent): finite eval loss only", "eval_loss": loss}
        return (None if math.isfinite(loss) else f"eval loss is {loss}"), details
    loss = trainer.evaluate([batch])
    details = {"parity": "exact reference batch (torch present)", "eval_loss": loss, "reference": expected}
    if expected is None:
        return None, {**details, "parity": "manifest has no reference eval loss"}
    if not (math.isfinite(loss) and abs(loss - expected) <= PARITY_TOLERANCE):
        return f"eval loss {loss:.6f} differs from the manifest reference {expected:.6f}", details
    return None, details


def check_benchmark(ctx: DiagContext) -> CheckResult:
    """Loss parity of the untouched bundle, then a few AdamW steps: steps/s and tokens/s."""
    if ctx.config is None:
        return skipped("benchmark", "no device config: no bundle configured")
    try:
        trainer = ctx.trainer()
    except RuntimeError as exc:
        return failed("benchmark", f"cannot build a trainer: {exc}")
    raw = trainer.manifest.raw
    vocab_size = int(raw["model"]["vocab_size"])
    expected = raw.get("reference", {}).get("eval_loss")
    problem, details = _parity(trainer, expected, vocab_size)  # before any step: the model is untouched
    if problem is not None:
        return failed("benchmark", f"loss parity: {problem}", **details)
    seq_len = min(BENCH_SEQ_LEN, trainer.manifest.seq_len)
    batches = [
        numpy_batch(vocab_size, batch_size=BENCH_BATCH_SIZE, seq_len=seq_len, seed=i)
        for i in range(ctx.benchmark_steps + 1)
    ]
    trainer.train(batches[:1], steps=1, learning_rate=BENCH_LEARNING_RATE)  # warm-up: allocations, kernels
    start = time.perf_counter()
    result = trainer.train(batches[1:], steps=ctx.benchmark_steps, learning_rate=BENCH_LEARNING_RATE)
    seconds = time.perf_counter() - start
    if not math.isfinite(result.mean_loss):
        return failed("benchmark", f"training loss is {result.mean_loss}", **details)
    steps_per_s = result.steps / seconds
    details.update(
        steps=result.steps,
        batch_size=BENCH_BATCH_SIZE,
        seq_len=seq_len,
        steps_per_s=round(steps_per_s, 3),
        tokens_per_s=round(result.target_tokens / seconds, 1),
        train_loss=result.mean_loss,
    )
    return passed(
        "benchmark",
        f"{steps_per_s:.2f} steps/s (batch {BENCH_BATCH_SIZE}×{seq_len}), "
        f"eval loss {details['eval_loss']:.4f}; {details['parity']}",
        **details,
    )
