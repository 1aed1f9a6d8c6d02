"""Trace the LoRA model into an ONNX graph that computes the causal-LM loss itself.

The loss is part of the traced graph (shift by one, cross entropy with ignore_index=-100), so ONNX
Runtime trains exactly the loss torch computes, padding included, without a custom onnxblock.
Settings are those verified against onnxruntime-training 1.19.2 (docs/toolchain.md): TorchScript exporter
(dynamo=False), opset 14 (17 breaks the LayerNormalization gradient), training mode, no constant folding.

Two choices make ONNX Runtime's CPU step cheaper without changing the function the graph computes
(docs/benchmarks.md, "What the ORT backend changed, and why"): the traced loss is log-softmax, gather
and a masked mean (`GRAPH_LOSS`) instead of `cross_entropy`, whose ONNX form (SoftmaxCrossEntropyLoss)
runs single-threaded over the [B*S, V] logits in ONNX Runtime; and attention is traced in its eager form
(`EXPORT_ATTENTION`), which adds one precomputed mask per layer instead of the two Where ops per layer
over [B, H, S, S] that the SDPA path traces into. The torch backend keeps `cross_entropy` and SDPA,
torch's own fastest forms.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from peft import PeftModel

OPSET = 14
INPUT_NAMES = ("input_ids", "attention_mask", "labels")
OUTPUT_NAMES = ("loss", "logits")
IGNORE_INDEX = -100
WRAPPER_PREFIX = "lm."
EXPORT_ATTENTION = "eager"


class CausalLMWithLoss(torch.nn.Module):
    """Wraps a (PEFT) causal LM: (input_ids, attention_mask, labels) -> (mean token loss, logits).

    Inputs int64 [B, S]; loss float32 scalar, the mean next-token cross entropy over positions whose
    next label is not IGNORE_INDEX (NaN if there is none); logits float32 [B, S, V].
    `graph_loss` True computes it as `graph_loss` below (the form traced into ONNX), False with
    `torch.nn.functional.cross_entropy` (the torch backend's); both give the same value.
    """

    def __init__(self, lm: torch.nn.Module, *, graph_loss: bool = False) -> None:
        super().__init__()
        self.lm = lm  # parameter names in the graph get WRAPPER_PREFIX
        self.graph_loss = graph_loss

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.lm(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).logits  # [B,S,V]
        flat = logits.reshape(-1, logits.shape[-1])  # [B*S, V], a view: no copy of the logits
        targets = shift_labels(labels).reshape(-1)  # [B*S]
        if self.graph_loss:
            return graph_loss(flat, targets), logits
        return torch.nn.functional.cross_entropy(flat, targets, ignore_index=IGNORE_INDEX), logits


def graph_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy of float32 `logits` [N, V] against int64 `targets` [N], skipping IGNORE_INDEX.

    Equal to `cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)` (NaN when every target is
    ignored, as there), written as LogSoftmax, GatherElements and a masked mean so that its ONNX form
    runs on ONNX Runtime's multithreaded softmax kernel.
    """
    keep = targets != IGNORE_INDEX  # [N] bool
    log_probs = torch.log_softmax(logits, dim=-1)  # [N, V]
    picked = log_probs.gather(1, targets.clamp(min=0).unsqueeze(1)).squeeze(1)  # [N]
    weights = keep.to(picked.dtype)
    return -(picked * weights).sum() / weights.sum()


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """int64 [B, S] -> [B, S]: position t holds the label of t+1; the last position is IGNORE_INDEX.

    Shifting the (small) labels instead of slicing the [B, S, V] logits gives the same mean loss over
    the same tokens, but the loss reads the logits in place: no copy of them forward and no zero-padded
    [B, S, V] gradient buffer backward (in ONNX Runtime, a Slice and a SliceGrad over the full
    vocabulary; 2 x 128 x 49,152 float32 is 48 MiB each for SmolLM2-135M).
    """
    pad = torch.full_like(labels[:, :1], IGNORE_INDEX)  # traced with the batch size kept dynamic
    return torch.cat([labels[:, 1:], pad], dim=1)


def example_batch(*, batch_size: int, seq_len: int, vocab_size: int, seed: int) -> dict[str, torch.Tensor]:
    """A deterministic batch with padding in the last row (exercises the ignore_index path)."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, seq_len // 2 :] = 0
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def export_training_graph(peft_model: PeftModel, out_path: Path, *, vocab_size: int) -> None:
    """Write the forward graph (with loss) to `out_path`; large models spill weights to external data."""
    # dropout is already 0; train() keeps the graph trainable
    wrapper = CausalLMWithLoss(peft_model, graph_loss=True).train()
    batch = example_batch(batch_size=2, seq_len=8, vocab_size=vocab_size, seed=0)
    base = peft_model.get_base_model()
    attention = base.config._attn_implementation
    base.set_attn_implementation(EXPORT_ATTENTION)
    try:
        with warnings.catch_warnings():
            # The tracer warns about data-dependent Python branches in HF masking code; the branches it
            # freezes are shape checks that hold for every batch/sequence size (tests export once and
            # check parity at other shapes).
            warnings.simplefilter("ignore")
            _trace(wrapper, batch, out_path)
    finally:
        base.set_attn_implementation(attention)


def _trace(wrapper: torch.nn.Module, batch: dict[str, torch.Tensor], out_path: Path) -> None:
    dynamic_axes = {name: {0: "batch", 1: "seq"} for name in INPUT_NAMES}
    dynamic_axes["logits"] = {0: "batch", 1: "seq"}
    torch.onnx.export(
        wrapper,
        (batch["input_ids"], batch["attention_mask"], batch["labels"]),
        str(out_path),
        input_names=list(INPUT_NAMES),
        output_names=list(OUTPUT_NAMES),
        dynamic_axes=dynamic_axes,
        opset_version=OPSET,
        do_constant_folding=False,
        training=torch.onnx.TrainingMode.TRAINING,
        export_params=True,
        dynamo=False,
    )


def onnx_name(torch_name: str) -> str:
    """Initializer name in the exported graph of a PEFT-model parameter name."""
    return WRAPPER_PREFIX + torch_name
