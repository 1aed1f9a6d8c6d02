"""`fedlora adapter`: flat vector file -> PEFT adapter directory."""

from __future__ import annotations

import argparse
from pathlib import Path

# One line in `fedlora --help` and this command's description (fl_transport/command.py).
HELP = "turn a flat federated LoRA vector into a PEFT adapter directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the adapter flags (docs/bundle.md, "PEFT adapter output")."""
    parser.add_argument(
        "--bundle", required=True, type=Path, help="bundle directory written by `fedlora export`"
    )
    parser.add_argument(
        "--weights", required=True, type=Path, help="flat vector file (fedlora-flat-v1 safetensors)"
    )
    parser.add_argument("--out", required=True, type=Path, help="adapter directory to write")
    parser.add_argument(
        "--base-model",
        default=None,
        help="base_model_name_or_path to record (default: the bundle's base_model/ or source path)",
    )


def run(args: argparse.Namespace) -> int:
    """Write the adapter and say where it is."""
    from export.adapter import write_adapter

    out = write_adapter(args.bundle, args.weights, args.out, base_model=args.base_model)
    print(f"PEFT adapter written to {out} (load with PeftModel.from_pretrained(base_model, '{out}'))")
    return 0
