"""Check the torch backend's CUDA path against its CPU path on the same bundle, batches and start vector.

Run on a machine with an NVIDIA GPU and torch+CUDA (the ONNX Runtime training backend's CUDA provider needs
the CUDA build of onnxruntime-training 1.19.2, CPython <= 3.11; see docs/benchmarks.md):

    python bench/cuda_backend_check.py --bundle BUNDLE [--steps 20]

Prints a table: device, steps/s, final loss, and the max |difference| of the trained vectors (CUDA vs CPU).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def _batches(vocab_size: int, *, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        ids = rng.integers(0, min(vocab_size, 256), size=(8, 64), dtype=np.int64)
        mask = np.ones_like(ids)
        mask[-1, 40:] = 0
        out.append({"input_ids": ids, "attention_mask": mask, "labels": np.where(mask == 1, ids, -100)})
    return out


def _run(bundle: Path, device: str, steps: int) -> tuple[np.ndarray, float, float, list[str]]:
    from edge_runtime.trainer.select import create_trainer

    with create_trainer(bundle, backend="torch", device=device) as trainer:
        start = trainer.get_trainable().copy()
        vocab = int(trainer.manifest.raw["model"]["vocab_size"])
        warm = _batches(vocab, count=2, seed=1)
        trainer.train(iter(warm), steps=2, learning_rate=1e-3)  # warm-up (CUDA context, kernels)
        trainer.set_trainable(start)
        batches = _batches(vocab, count=steps, seed=2)
        t0 = time.perf_counter()
        result = trainer.train(iter(batches), steps=steps, learning_rate=1e-3)
        seconds = time.perf_counter() - t0
        return trainer.get_trainable(), steps / seconds, result.last_loss, list(trainer.providers)


def main() -> None:
    """Parse arguments, train on CPU and CUDA, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    import torch

    print(
        f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
        f"{', ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''}"
    )
    cpu_vec, cpu_rate, cpu_loss, cpu_prov = _run(args.bundle, "cpu", args.steps)
    rows = [("cpu", cpu_prov, cpu_rate, cpu_loss, 0.0)]
    if torch.cuda.is_available():
        gpu_vec, gpu_rate, gpu_loss, gpu_prov = _run(args.bundle, "cuda", args.steps)
        rows.append(("cuda", gpu_prov, gpu_rate, gpu_loss, float(np.abs(gpu_vec - cpu_vec).max())))
    print("| device | providers | steps/s | last loss | max abs diff vs cpu | speed vs cpu |")
    print("|---|---|---|---|---|---|")
    for device, prov, rate, loss, diff in rows:
        print(
            f"| {device} | {','.join(prov)} | {rate:.1f} | {loss:.6f} | {diff:.2e} | {rate / cpu_rate:.2f}x |"
        )


if __name__ == "__main__":
    main()
