"""Trace the LoRA model into an ONNX graph that computes the causal-LM loss itself.

The loss is part of the traced graph (shift by one, cross entropy with ignore_index=-100), so ONNX
Runtime trains exactly the loss torch computes, padding included, without a custom onnxblock.
Settings are those verified against onnxruntime-training 1.19.2 (docs/toolchain.md): TorchScript exporter
(dynamo=False), opset 14 (17 breaks the LayerNormalization gradient), training mode, no constant folding.

Some choices make ONNX Runtime's CPU step cheaper without changing the function the graph computes
(docs/benchmarks.md, "What the ORT backend changed, and why"). ONNX Runtime runs the gradient kernels
of LogSoftmax and SoftmaxCrossEntropyLoss (the ONNX forms of `log_softmax` and `cross_entropy`) on one
thread over the [B*S, V] logits, so the traced loss (`graph_loss`) is a shifted log-sum-exp minus the
target's logit, taken from the hidden states where the output layer allows (`find_output_layer`).
Rotary embedding and attention are traced in the forms of `export.graph_forms`. The torch backend
keeps `cross_entropy` and the model's own attention, torch's fastest forms.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from peft import PeftModel

from export.graph_forms import export_forms

OPSET = 14
INPUT_NAMES = ("input_ids", "attention_mask", "labels")
OUTPUT_NAMES = ("loss", "logits")
IGNORE_INDEX = -100
WRAPPER_PREFIX = "lm."


class CausalLMWithLoss(torch.nn.Module):
    """Wraps a (PEFT) causal LM: (input_ids, attention_mask, labels) -> (mean token loss, logits).

    Inputs int64 [B, S]; loss float32 scalar, the mean next-token cross entropy over positions whose
    next label is not IGNORE_INDEX (NaN if there is none); logits float32 [B, S, V].
    `graph_loss` True computes it as `graph_loss` below (the form traced into ONNX), False with
    `torch.nn.functional.cross_entropy` (the torch backend's); both give the same value and gradient.
    `output_layer` (from `find_output_layer`, graph loss only) runs the decoder and the output layer
    apart, so that the loss can read the hidden states.
    """

    def __init__(
        self,
        lm: torch.nn.Module,
        *,
        graph_loss: bool = False,
        output_layer: tuple[torch.nn.Module, torch.nn.Linear] | None = None,
    ) -> None:
        super().__init__()
        self.lm = lm  # parameter names in the graph get WRAPPER_PREFIX
        self.graph_loss = graph_loss
        self.output_layer = output_layer  # a plain tuple: its modules are not registered twice

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        targets = shift_labels(labels).reshape(-1)  # [B*S]
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
        if self.graph_loss and self.output_layer is not None:
            decoder, head = self.output_layer
            hidden = decoder(**inputs)[0]  # [B, S, D]
            logits = head(hidden)  # [B, S, V]
            flat = logits.reshape(-1, logits.shape[-1])  # [B*S, V]
            flat_hidden = hidden.reshape(-1, hidden.shape[-1])  # [B*S, D]
            return graph_loss(flat, targets, hidden=flat_hidden, weight=head.weight), logits
        logits = self.lm(**inputs).logits  # [B, S, V]
        flat = logits.reshape(-1, logits.shape[-1])  # [B*S, V], a view: no copy of the logits
        if self.graph_loss:
            return graph_loss(flat, targets), logits
        return torch.nn.functional.cross_entropy(flat, targets, ignore_index=IGNORE_INDEX), logits


def graph_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    hidden: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross entropy of float32 `logits` [N, V] against int64 `targets` [N], skipping IGNORE_INDEX.

    Equal to `cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)` (NaN when every target is
    ignored, as there), in value and gradient, written as `log(sum(exp(logits - shift))) + shift` minus
    the target's logit. `shift` is the row maximum cast to an integer: the cast ends its gradient
    (ONNX Runtime builds none through an integer tensor, and the shift's true gradient is zero), and
    `exp` stays within [0, e]. In ONNX that is ReduceMax, Sub, Exp and ReduceSum over [N, V], which ONNX
    Runtime runs on all threads; `log_softmax` and `cross_entropy` trace into LogSoftmax and
    SoftmaxCrossEntropyLoss, whose gradient kernels run on one thread (docs/benchmarks.md).

    With `hidden` [N, D] and `weight` [V, D] such that `logits == hidden @ weight.T` (an output layer
    without bias), the target's logit is `hidden . weight[target]`, so its gradient goes to the [N, D]
    hidden states rather than into a second [N, V] buffer added to the first.
    """
    keep = targets != IGNORE_INDEX  # [N] bool
    safe = targets.clamp(min=0)  # [N]
    shift = logits.detach().amax(dim=-1, keepdim=True).to(torch.int32).to(logits.dtype)  # [N, 1]
    if hidden is None or weight is None:
        picked = logits.gather(1, safe.unsqueeze(1)).squeeze(1)  # [N]
    else:
        picked = (hidden * weight[safe]).sum(dim=-1)  # [N]
    log_sum_exp = torch.log(torch.exp(logits - shift).sum(dim=-1)) + shift.squeeze(1)  # [N]
    weights = keep.to(picked.dtype)
    return ((log_sum_exp - picked) * weights).sum() / weights.sum()


def find_output_layer(
    lm: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.nn.Module, torch.nn.Linear] | None:
    """(decoder, head) of a (PEFT) causal LM whose logits on `batch` are `head(decoder(...)[0])`, else None.

    `head` must be a bias-free `torch.nn.Linear` (not a LoRA-wrapped one); the check runs the model
    once both ways, so a family that scales or caps its logits keeps the plain path.
    """
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    decoder = getattr(base, "base_model", None)
    if not isinstance(head, torch.nn.Linear) or type(head) is not torch.nn.Linear:
        return None  # a LoRA-wrapped or otherwise special output layer keeps the plain path
    if head.bias is not None or decoder is None or decoder is base:
        return None
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        expected = lm(**inputs, use_cache=False).logits
        got = head(decoder(**inputs, use_cache=False)[0])
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-5, atol=1e-5):
        return None
    return decoder, head


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
    batch = example_batch(batch_size=2, seq_len=8, vocab_size=vocab_size, seed=0)
    output_layer = find_output_layer(peft_model, batch)
    wrapper = CausalLMWithLoss(peft_model, graph_loss=True, output_layer=output_layer).train()
    with export_forms(peft_model.get_base_model()), warnings.catch_warnings():
        # The tracer warns about data-dependent Python branches in HF masking code; the branches it
        # freezes are shape checks that hold for every batch/sequence size (tests export once and
        # check parity at other shapes).
        warnings.simplefilter("ignore")
        _trace(wrapper, batch, out_path)


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
