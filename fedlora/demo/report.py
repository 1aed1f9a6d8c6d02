"""The demo's outputs: central evaluation of each global version, report.json and loss.png.

report.json keeps stable keys: config, rounds[] (round, online, survivors, dropped, train_loss,
eval_loss, eval_perplexity, uplink_bytes_per_device, dense_fp32_bytes, epsilon, delta, seconds), final
(eval_loss, eval_perplexity, initial_eval_loss, initial_eval_perplexity, epsilon, delta, privacy,
completions, adapter_dir). Other keys may be added. docs/demo.md explains every number.
"""

from __future__ import annotations

import json
import math
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
    "online",
    "survivors",
    "dropped",
    "train_loss",
    "eval_loss",
    "eval_perplexity",
    "uplink_bytes_per_device",
    "dense_fp32_bytes",
    "epsilon",
    "delta",
    "seconds",
)
EVAL_BATCH_SIZE = 8


def evaluate_versions(
    bundle_dir: Path,
    vectors: Mapping[int, np.ndarray],
    records: Sequence[CorpusRecord],
    *,
    tier: str,
    max_rows: int | None = None,
) -> dict[int, float]:
    """Held-out eval loss (nats per target token, token-weighted) of each global version.

    Evaluated with the bundle's ONNX Runtime eval model on the rows of `tier`'s records (the same
    `seq_len` packing devices train on), the first `max_rows` rows only when given.
    """
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
    if max_rows is not None:
        batches = batches[: max(1, -(-max_rows // EVAL_BATCH_SIZE))]
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


def perplexity(loss: float | None) -> float | None:
    """exp(loss) of a mean cross entropy in nats/token (None stays None; overflow gives inf)."""
    if loss is None:
        return None
    return math.exp(loss) if loss < 700 else math.inf


def plot_losses(
    path: Path, rounds: Sequence[Mapping[str, Any]], *, initial_eval_loss: float, title: str = "fedlora demo"
) -> Path:
    """loss.png: held-out eval loss and perplexity (from version 0) and mean device train loss per round."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, (ax, ax_ppl) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    xs = [0] + [r["round"] for r in rounds]
    ax.plot(
        xs, [initial_eval_loss] + [r["eval_loss"] for r in rounds], marker="o", label="eval loss (held out)"
    )
    train = [(r["round"], r["train_loss"]) for r in rounds if r.get("train_loss") is not None]
    if train:
        ax.plot(*zip(*train, strict=True), marker="s", linestyle="--", label="train loss (device mean)")
    ax.set_xlabel("round")
    ax.set_ylabel("causal LM loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    ppl = [perplexity(initial_eval_loss)] + [perplexity(r["eval_loss"]) for r in rounds]
    ax_ppl.plot(xs, ppl, marker="o", color="tab:green", label="perplexity (held out)")
    ax_ppl.set_xlabel("round")
    ax_ppl.set_ylabel("perplexity = exp(eval loss)")
    ax_ppl.set_title("held-out perplexity")
    ax_ppl.grid(alpha=0.3)
    ax_ppl.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
