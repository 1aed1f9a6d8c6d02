"""Training step benchmark: ONNX Runtime vs torch eager on the same LoRA model and batch, in one run.

For each model (the built-in tiny-llama and a ~58M-parameter Llama built from a config, no download)
the script exports a bundle, then measures each backend in its own child process so the peak resident
memory (VmHWM) belongs to that backend alone. A child does what a device round's training part does:
verify + load the bundle, load the global vector, take warm-up steps (not timed), then timed steps.
The ORT child runs with torch, transformers and peft made unimportable, as on a device install (with
torch installed, `import onnxruntime` of the training build imports torch through its package check).

    python bench/train_step.py                       # both models, table on stdout
    python bench/train_step.py --models tiny --json out.json --cache-dir /tmp/fedlora-bench

Numbers are only comparable within one run (same machine, same load).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("ort", "torch")
# ~58M parameters: vocab 32000, hidden 512, 8 layers, 8 heads, MLP 1376, untied embeddings (like tiny-llama).
LLAMA_58M = {
    "vocab_size": 32000,
    "hidden_size": 512,
    "intermediate_size": 1376,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}
MODELS = {"tiny": {"steps": 40, "warmup": 3}, "llama-58m": {"steps": 8, "warmup": 2}}


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status in MiB (VmRSS: now, VmHWM: peak of this process image).

    VmHWM rather than ru_maxrss: ru_maxrss survives execve, so a child reports its parent's peak
    when that was higher (here: the parent that just exported a 58M model).
    """
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def run_child(args: argparse.Namespace) -> None:
    """One backend, one model: print a JSON line with steps/s and memory."""
    if args.backend == "ort":
        for name in ("torch", "transformers", "peft"):
            sys.modules[name] = None  # type: ignore[assignment]  # a device install has none of them
    import numpy as np

    from edge_runtime.trainer import create_trainer
    from fl_protocol.flatvec import load_flat_vector

    rss_start = _status_mib("VmRSS")  # Python + numpy + fedlora; backends load in create_trainer
    trainer = create_trainer(Path(args.bundle), backend=args.backend, device="cpu")
    manifest = trainer.manifest
    vocab = int(manifest.raw["model"]["vocab_size"])
    ids = np.random.default_rng(0).integers(0, vocab, size=(args.batch_size, args.seq_len), dtype=np.int64)
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids), "labels": ids}
    initial = load_flat_vector(
        manifest.path("initial_vector.safetensors"), expected_bundle_id=manifest.bundle_id
    )
    trainer.set_trainable(initial.values)
    rss_loaded = _status_mib("VmRSS")
    trainer.train([batch] * args.warmup, steps=args.warmup, learning_rate=1e-4)
    result = trainer.train([batch] * args.steps, steps=args.steps, learning_rate=1e-4)
    trainer.get_trainable()
    peak = _status_mib("VmHWM")
    print(
        json.dumps(
            {
                "backend": trainer.backend_name,
                "providers": trainer.providers,
                "steps": result.steps,
                "seconds": result.seconds,
                "steps_per_s": result.steps / result.seconds,
                "loss": result.last_loss,
                "rss_at_start_mib": rss_start,
                "rss_after_load_mib": rss_loaded,
                "peak_rss_mib": peak,
            }
        )
    )


def _build_58m(where: Path) -> tuple[Path, int]:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**LLAMA_58M))
    count = sum(p.numel() for p in model.parameters())
    if not (where / "config.json").is_file():
        model.save_pretrained(where)
    return where, int(count)


def prepare_bundles(models: list[str], cache: Path, seq_len: int) -> dict[str, tuple[Path, int]]:
    """Export (or reuse from `cache`) one bundle per model; returns bundle dir and base parameter count."""
    from export.pipeline import ExportOptions, run_export
    from fl_protocol.manifest import load_manifest

    bundles: dict[str, tuple[Path, int]] = {}
    for name in models:
        out = cache / f"bundle-{name}-s{seq_len}"
        if not (out / "manifest.json").is_file():
            if name == "tiny":
                options = ExportOptions(model="tiny-llama", out_dir=out, seq_len=seq_len)
            else:
                src, _ = _build_58m(cache / "hf-llama-58m")
                options = ExportOptions(model=str(src), out_dir=out, seq_len=seq_len, tokenizer="byte")
            run_export(
                options, progress=lambda line, model=name: print(f"  export {model}: {line}", file=sys.stderr)
            )
        manifest = load_manifest(out, verify=False)
        bundles[name] = (out, int(manifest.raw["model"]["num_parameters"]))
    return bundles


def measure(bundle: Path, backend: str, args: argparse.Namespace, steps: int, warmup: int) -> dict[str, Any]:
    """Run one child process and parse its JSON line."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--bundle",
        str(bundle),
        "--backend",
        backend,
        "--steps",
        str(steps),
        "--warmup",
        str(warmup),
        "--batch-size",
        str(args.batch_size),
        "--seq-len",
        str(args.seq_len),
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{backend} child failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table; ratio columns compare ORT with torch on the same model."""
    head = (
        "| model | params | backend | steps/s | peak RSS MiB | RSS at start MiB | RSS loaded MiB "
        "| ORT/torch steps/s | ORT/torch peak RSS |"
    )
    lines = [head, "|" + "---|" * 9]
    by_model = {(r["model"], r["backend"]): r for r in rows}
    for r in rows:
        ort, tch = by_model.get((r["model"], "ort")), by_model.get((r["model"], "torch"))
        ratios = ("", "")
        if r["backend"] == "ort" and ort and tch:
            ratios = (
                f"{ort['steps_per_s'] / tch['steps_per_s']:.2f}",
                f"{ort['peak_rss_mib'] / tch['peak_rss_mib']:.2f}",
            )
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['backend']} | {r['steps_per_s']:.2f} | "
            f"{r['peak_rss_mib']:.0f} | {r['rss_at_start_mib']:.0f} | {r['rss_after_load_mib']:.0f} | "
            f"{ratios[0]} | {ratios[1]} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments; run as the parent (export + table) or as a measuring child."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="tiny,llama-58m")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="keep exported bundles here between runs"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", help=argparse.SUPPRESS)
    parser.add_argument("--backend", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args)
        return
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(MODELS)}")
    with tempfile.TemporaryDirectory(prefix="fedlora-bench-") as tmp:
        cache = args.cache_dir or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        bundles = prepare_bundles(models, cache, args.seq_len)
        rows = []
        for name in models:
            bundle, params = bundles[name]
            for backend in BACKENDS:
                row = measure(bundle, backend, args, MODELS[name]["steps"], MODELS[name]["warmup"])
                rows.append({"model": name, "params": params, **row})
                print(
                    f"  {name} {backend}: {row['steps_per_s']:.2f} steps/s, "
                    f"peak {row['peak_rss_mib']:.0f} MiB",
                    file=sys.stderr,
                )
    print(f"batch {args.batch_size} x {args.seq_len} tokens, LoRA r=8 on q_proj,v_proj, AdamW, CPU")
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
