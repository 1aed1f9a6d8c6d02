"""Training step benchmark: ONNX Runtime vs torch eager on the same LoRA bundle and batch, in one run.

Targets are bundles (`--bundles DIR,...`) or model names exported first (`--models NAME,...`): anything
`fedlora export --model` takes (`tiny-llama`, `smollm2-135m`, a Hugging Face directory), plus `tiny`
(= tiny-llama) and `llama-58m`, a 58M-parameter Llama built from a config here (random weights, no
download). Exports are cached in `--cache-dir`.

Method. Every measurement is one backend in a fresh child process, so the peak resident memory (VmHWM)
belongs to that backend alone and no run inherits another's caches or allocator. The two backends run
in alternating pairs (ort,torch then torch,ort, ...) so that a change of the machine's load hits both
alike; the ratio is taken within each pair and the table reports medians over the pairs. Each child
does what a device round's training part does: verify + load the bundle, load the global vector, take
warm-up steps (not timed), then timed steps on the same fixed batch; it reports wall seconds, CPU
seconds (all its threads) per step, memory, the last loss and the trained vector. The parent checks the
backends trained the same vector (max abs difference) and records `os.getloadavg()` before each child.
The ORT child runs with torch, transformers and peft made unimportable, as on a device install.

    python bench/train_step.py --bundles /path/to/bundle --pairs 5 --steps 6
    python bench/train_step.py --models smollm2-135m --cache-dir /tmp/fedlora-bench --json out.json

Numbers are comparable only within one run; on a shared machine read the load columns first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
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
ALIASES = {"tiny": "tiny-llama"}


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status in MiB (VmRSS: now, VmHWM: peak of this process image).

    VmHWM rather than ru_maxrss: ru_maxrss survives execve, so a child reports its parent's peak
    when that was higher (here: a parent that just exported a model).
    """
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def run_child(args: argparse.Namespace) -> None:
    """One backend, one bundle: print a JSON line with timings and memory; save the trained vector."""
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
        manifest.path(manifest.raw["artifacts"]["initial_vector"]), expected_bundle_id=manifest.bundle_id
    )
    trainer.set_trainable(initial.values)
    rss_loaded = _status_mib("VmRSS")
    trainer.train([batch] * args.warmup, steps=args.warmup, learning_rate=1e-4)
    cpu0 = time.process_time()
    result = trainer.train([batch] * args.steps, steps=args.steps, learning_rate=1e-4)
    cpu_s = time.process_time() - cpu0
    np.save(args.vector_out, trainer.get_trainable())
    row = {
        "backend": trainer.backend_name,
        "providers": trainer.providers,
        "steps": result.steps,
        "seconds": result.seconds,
        "steps_per_s": result.steps / result.seconds,
        "cpu_s_per_step": cpu_s / result.steps,
        "loss": result.last_loss,
        "rss_at_start_mib": rss_start,
        "rss_after_load_mib": rss_loaded,
        "peak_rss_mib": _status_mib("VmHWM"),
    }
    print(json.dumps(row))


def _build_58m(where: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    if not (where / "config.json").is_file():
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(LlamaConfig(**LLAMA_58M)).save_pretrained(where)
    return where


def export_target(name: str, cache: Path, seq_len: int) -> Path:
    """Export (or reuse from `cache`) the bundle of model `name`; returns the bundle directory."""
    from export.pipeline import ExportOptions, run_export

    model = ALIASES.get(name, name)
    out = cache / f"bundle-{Path(model).name}-s{seq_len}"
    if (out / "manifest.json").is_file():
        return out
    tokenizer = "auto"
    if model == "llama-58m":
        model, tokenizer = str(_build_58m(cache / "hf-llama-58m")), "byte"
    options = ExportOptions(model=model, out_dir=out, seq_len=seq_len, tokenizer=tokenizer)
    run_export(options, progress=lambda line: print(f"  export {name}: {line}", file=sys.stderr))
    return out


def measure(bundle: Path, backend: str, args: argparse.Namespace, vector_out: Path) -> dict[str, Any]:
    """Run one child process; returns its JSON row plus the load average seen just before it started."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--bundle", str(bundle)]
    cmd += ["--backend", backend, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += ["--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len)]
    cmd += ["--vector-out", str(vector_out)]
    load = os.getloadavg()[0]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{backend} child failed:\n{out.stderr[-3000:]}")
    row = dict(json.loads(out.stdout.strip().splitlines()[-1]))
    row["load_before"] = load
    return row


def run_pairs(target: str, bundle: Path, args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    """`args.pairs` alternating pairs on one bundle; each row gets its pair index and vector difference."""
    import numpy as np

    rows: list[dict[str, Any]] = []
    for pair in range(args.pairs):
        order = BACKENDS if pair % 2 == 0 else BACKENDS[::-1]
        vectors = {}
        for backend in order:
            vector_out = scratch / f"{backend}.npy"
            row = measure(bundle, backend, args, vector_out)
            vectors[backend] = np.load(vector_out)
            rows.append({"target": target, "pair": pair, **row})
            print(
                f"  {target} pair {pair} {backend}: {row['steps_per_s']:.3f} steps/s, "
                f"{row['cpu_s_per_step']:.2f} CPU s/step, peak {row['peak_rss_mib']:.0f} MiB, "
                f"load {row['load_before']:.1f}",
                file=sys.stderr,
            )
        diff = float(np.abs(vectors["ort"] - vectors["torch"]).max())
        for row in rows[-2:]:
            row["vector_max_abs_diff"] = diff
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per target: medians per backend and the median (min..max) of the within-pair ORT/torch ratios."""
    out = []
    for target in dict.fromkeys(r["target"] for r in rows):
        mine = [r for r in rows if r["target"] == target]
        by = {b: [r for r in mine if r["backend"] == b] for b in BACKENDS}
        pairs = sorted({r["pair"] for r in mine})
        ratio = {}
        for key in ("steps_per_s", "cpu_s_per_step", "peak_rss_mib"):
            values = [
                next(r[key] for r in by["ort"] if r["pair"] == p)
                / next(r[key] for r in by["torch"] if r["pair"] == p)
                for p in pairs
            ]
            ratio[key] = (statistics.median(values), min(values), max(values))
        summary: dict[str, Any] = {"target": target, "pairs": len(pairs), "ratio": ratio}
        for b in BACKENDS:
            summary[b] = {
                k: statistics.median(r[k] for r in by[b])
                for k in ("steps_per_s", "cpu_s_per_step", "peak_rss_mib", "rss_after_load_mib", "loss")
            }
        loads = [r["load_before"] for r in mine]
        summary["load"] = (min(loads), statistics.median(loads), max(loads))
        summary["vector_max_abs_diff"] = max(r["vector_max_abs_diff"] for r in mine)
        out.append(summary)
    return out


def format_table(summaries: list[dict[str, Any]]) -> str:
    """Markdown table: medians per backend, then ORT/torch ratios as median (min–max) over pairs."""
    head = (
        "| model | backend | steps/s | CPU s/step | peak RSS MiB | RSS loaded MiB | last loss "
        "| ORT/torch steps/s | ORT/torch CPU s/step | ORT/torch peak RSS | load 1-min (min/med/max) |"
    )
    lines = [head, "|" + "---|" * 11]
    for s in summaries:
        for b in BACKENDS:
            m = s[b]
            cells = ["", "", "", ""]
            if b == "ort":
                cells = [
                    *(_ratio(s["ratio"][k]) for k in ("steps_per_s", "cpu_s_per_step", "peak_rss_mib")),
                    "{:.1f} / {:.1f} / {:.1f}".format(*s["load"]),
                ]
            lines.append(
                f"| {s['target']} | {b} | {m['steps_per_s']:.3f} | {m['cpu_s_per_step']:.2f} | "
                f"{m['peak_rss_mib']:.0f} | {m['rss_after_load_mib']:.0f} | {m['loss']:.5f} | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(lines)


def _ratio(value: tuple[float, float, float]) -> str:
    return f"{value[0]:.2f} ({value[1]:.2f}–{value[2]:.2f})"


def main(argv: list[str] | None = None) -> None:
    """Parse arguments; run as the parent (export + pairs + table) or as a measuring child."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="", help="comma-separated model names or HF directories")
    parser.add_argument("--bundles", default="", help="comma-separated bundle directories")
    parser.add_argument("--pairs", type=int, default=3, help="alternating ort/torch pairs per target")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per child")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per child")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--cache-dir", type=Path, default=None, help="keep exported bundles here")
    parser.add_argument("--json", type=Path, default=None, help="also write every row and the summary")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", help=argparse.SUPPRESS)
    parser.add_argument("--backend", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--vector-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args)
        return
    if args.pairs < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("--pairs and --steps must be >= 1, --warmup >= 0")
    models = [m for m in args.models.split(",") if m]
    bundles = [Path(b) for b in args.bundles.split(",") if b]
    if not models and not bundles:
        models = ["tiny"]
    for bundle in bundles:
        if not (bundle / "manifest.json").is_file():
            parser.error(f"{bundle} is not a bundle (no manifest.json)")
    with tempfile.TemporaryDirectory(prefix="fedlora-bench-") as tmp:
        cache = args.cache_dir or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        targets = [(b.name, b) for b in bundles]
        targets += [(name, export_target(name, cache, args.seq_len)) for name in models]
        rows = [row for name, bundle in targets for row in run_pairs(name, bundle, args, Path(tmp))]
    summaries = summarize(rows)
    print(
        f"batch {args.batch_size} x {args.seq_len} tokens, {args.steps} timed steps after {args.warmup} "
        f"warm-up, {args.pairs} alternating pairs, fresh process per run, CPU; {os.cpu_count()} CPUs"
    )
    print(format_table(summaries))
    for s in summaries:
        print(f"{s['target']}: max |ORT - torch| of the trained vector {s['vector_max_abs_diff']:.2e}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summaries}, indent=2) + "\n")


if __name__ == "__main__":
    main()
