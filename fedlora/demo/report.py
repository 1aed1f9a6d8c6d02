"""The demo's outputs: central evaluation of each global version, report.json and loss.png.

report.json keeps the stable keys of DESIGN.md §3: config, rounds[] (round, selected, survivors, dropped,
train_loss, eval_loss, uplink_bytes_per_device, dense_fp32_bytes, epsilon, delta, seconds) and final
(eval_loss, epsilon, adapter_dir). Other keys may be added.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.data import LocalDataset, Record
from edge_runtime.text_tokenizer import load_tokenizer
from edge_runtime.trainer.select import create_trainer
from fedlora.corpus import CorpusRecord
from fl_protocol.manifest import load_manifest

ROUND_KEYS = (
    "round",
    "selected",
    "survivors",
    "dropped",
    "train_loss",
    "eval_loss",
    "uplink_bytes_per_device",
    "dense_fp32_bytes",
    "epsilon",
    "delta",
    "seconds",
)
EVAL_BATCH_SIZE = 8


def evaluate_versions(
    bundle_dir: Path, vectors: Mapping[int, np.ndarray], records: Sequence[CorpusRecord], *, tier: str
) -> dict[int, float]:
    """Held-out eval loss (token-weighted) of each global version, on the records of `tier`."""
    manifest = load_manifest(bundle_dir)
    tokenizer = load_tokenizer(manifest.tokenizer_spec, bundle_dir)
    dataset = LocalDataset.from_records(
        [Record(r.text, r.tier, r.name) for r in records],
        tokenizer,
        seq_len=manifest.seq_len,
        tier=tier,
        eval_fraction=0.0,
        seed=0,
    )
    batches = [b.as_dict() for b in dataset.batches(EVAL_BATCH_SIZE, epoch=0)]
    losses: dict[int, float] = {}
    with create_trainer(bundle_dir, backend="auto", device="cpu") as trainer:
        for version, vector in sorted(vectors.items()):
            trainer.set_trainable(vector)
            losses[version] = trainer.evaluate(batches)
    return losses


def write_report(
    path: Path, *, config: Mapping[str, Any], rounds: Sequence[Mapping[str, Any]], final: Mapping[str, Any]
) -> Path:
    """Write report.json with every stable key present (None where a value is not known)."""
    stable_rounds = [{**{k: r.get(k) for k in ROUND_KEYS}, **r} for r in rounds]
    doc = {"config": dict(config), "rounds": stable_rounds, "final": dict(final)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return path


def plot_losses(path: Path, rounds: Sequence[Mapping[str, Any]], *, initial_eval_loss: float) -> Path:
    """loss.png: held-out eval loss (from version 0) and mean device train loss per round."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    xs = [0] + [r["round"] for r in rounds]
    ax.plot(
        xs, [initial_eval_loss] + [r["eval_loss"] for r in rounds], marker="o", label="eval loss (held out)"
    )
    train = [(r["round"], r["train_loss"]) for r in rounds if r.get("train_loss") is not None]
    if train:
        ax.plot(*zip(*train, strict=True), marker="s", linestyle="--", label="train loss (device mean)")
    ax.set_xlabel("round")
    ax.set_ylabel("causal LM loss (nats/token)")
    ax.set_title("fedlora demo")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
