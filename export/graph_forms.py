"""Export-only forms of rotary embedding and attention that ONNX Runtime trains faster on a CPU.

Both compute the same function as the model's own code; they only change the operators the tracer
records. ONNX Runtime's sequential CPU executor runs small element-wise and copy kernels (Slice, Neg,
Concat, Expand, their gradients and the gradient Sums) on one thread each, one after another, while
MatMul runs on MLAS's threaded GEMM. Measurements: docs/benchmarks.md, "What the ORT backend changed".

- `rotary_with_matrix`: Hugging Face's `apply_rotary_pos_emb` computes `x * cos + rotate_half(x) * sin`,
  and `rotate_half` traces into Slice, Slice, Neg and Concat forward, SliceGrad, SliceGrad, Neg, Split and
  a Sum backward, per tensor and layer. `rotate_half(x)` is `x @ R` for a constant signed permutation R
  [D, D] (RoFormer, Su et al. 2021), one MatMul forward and one backward.
- `grouped_query_attention`: the eager attention repeats each key/value head `G` times (Expand and
  Reshape forward, ReduceSum backward) before its matmuls. Folding the `G` query heads of a group into
  the rows of one matmul gives the same scores without the copies (GQA, Ainslie et al. 2023).

`export_forms(model)` installs both while the graph is traced and restores the model afterwards. A
modeling module is patched only if its `apply_rotary_pos_emb` computes the standard form (checked
numerically), and a call whose cos/sin cover only part of the head goes to the original; GPT-2 has no
rotary embedding and keeps its code. The export checks the traced graph's loss against torch's
on a reference batch, so a form that changed the function would fail the export.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import numpy as np
import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

EXPORT_ATTENTION = "fedlora_grouped"


def rotate_half_matrix(head_dim: int, dtype: torch.dtype) -> torch.Tensor:
    """[D, D] signed permutation R with `x @ R == cat(-x[..., D/2:], x[..., :D/2])` (`rotate_half`).

    Built in numpy, so that a trace records one constant rather than the ops that fill it.
    """
    half = head_dim // 2
    matrix = np.zeros((head_dim, head_dim), dtype=np.float32)
    index = np.arange(half)
    matrix[index + half, index] = -1.0
    matrix[index, index + half] = 1.0
    return torch.from_numpy(matrix).to(dtype)


def rotary_with_matrix(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hugging Face's `apply_rotary_pos_emb` with `rotate_half(x)` written as `x @ R`.

    q [B, H, S, D], k [B, KV, S, D] (with the default `unsqueeze_dim` 1), cos/sin [B, S, D] ->
    (q_embed, k_embed) of q's and k's shapes and dtype.
    """
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    rotate = rotate_half_matrix(int(q.shape[-1]), q.dtype)  # the head size is fixed: a constant
    return q * cos + (q @ rotate) * sin, k * cos + (k @ rotate) * sin


def grouped_query_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention without repeating key/value heads.

    query [B, H, S, D], key/value [B, KV, Sk, D] with H = G * KV (query head h uses key head h // G, as
    in Hugging Face's `repeat_kv`), attention_mask additive float [B, 1, S, Sk] or None. Returns the
    attention output [B, S, H, D] and the probabilities [B, KV, G * S, Sk]. Dropout must be 0 (the
    export traces with dropout 0).
    """
    if dropout:
        raise ValueError(f"grouped_query_attention traces without dropout, got {dropout}")
    batch, heads, seq, head_dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    q = query.reshape(batch, kv_heads, groups * seq, head_dim)
    scores = torch.matmul(q, key.transpose(2, 3)) * scaling  # [B, KV, G*S, Sk]
    if attention_mask is not None:
        keys = scores.shape[-1]
        mask = attention_mask[:, :, None, :, :keys]  # [B, 1, 1, S, Sk]
        scores = (scores.reshape(batch, kv_heads, groups, seq, keys) + mask).reshape(
            batch, kv_heads, groups * seq, keys
        )
    probs = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(probs, value)  # [B, KV, G*S, D]
    out = out.reshape(batch, heads, seq, head_dim).transpose(1, 2).contiguous()
    return out, probs


AttentionInterface.register(EXPORT_ATTENTION, grouped_query_attention)
AttentionMaskInterface.register(EXPORT_ATTENTION, eager_mask)


@contextlib.contextmanager
def export_forms(model: torch.nn.Module) -> Iterator[None]:
    """While tracing `model` (a PreTrainedModel): `rotate_half` as a MatMul, grouped-query attention.

    Patches `apply_rotary_pos_emb` in the modeling modules of `model`'s layers whose function gives
    `rotary_with_matrix`'s result on a random input (a partial or otherwise different rotary keeps its
    own code), and sets the attention implementation to EXPORT_ATTENTION; both are restored on exit,
    also after an error.
    """
    patched: list[tuple[ModuleType, Callable[..., Any]]] = []
    for name in {type(sub).__module__ for sub in model.modules()}:
        mod = sys.modules.get(name)
        apply = getattr(mod, "apply_rotary_pos_emb", None)
        if mod is not None and callable(apply) and is_standard_rotary(apply):
            patched.append((mod, apply))
            setattr(mod, "apply_rotary_pos_emb", matrix_form_of(apply))  # noqa: B010 - a module global
    attention = model.config._attn_implementation
    model.set_attn_implementation(EXPORT_ATTENTION)
    try:
        yield
    finally:
        model.set_attn_implementation(attention)
        for mod, apply in patched:
            setattr(mod, "apply_rotary_pos_emb", apply)  # noqa: B010


def is_standard_rotary(apply: Callable[..., Any]) -> bool:
    """Whether `apply(q, k, cos, sin)` equals `rotary_with_matrix` on a random full-width input."""
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 5, 8, generator=gen), torch.randn(2, 2, 5, 8, generator=gen)
    cos, sin = torch.randn(2, 5, 8, generator=gen), torch.randn(2, 5, 8, generator=gen)
    try:
        got = apply(q, k, cos, sin)
    except Exception:  # noqa: BLE001 - a different signature is simply not the standard form
        return False
    want = rotary_with_matrix(q, k, cos, sin)
    return all(
        isinstance(a, torch.Tensor) and a.shape == b.shape and torch.allclose(a, b, atol=1e-6)
        for a, b in zip(got, want, strict=True)
    )


def matrix_form_of(original: Callable[..., Any]) -> Callable[..., Any]:
    """`rotary_with_matrix` where the rotary spans the whole head; `original` for any other call."""

    def apply(
        q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *args: Any, **kwargs: Any
    ):
        if args or set(kwargs) - {"unsqueeze_dim"} or cos.shape[-1] != q.shape[-1]:
            return original(q, k, cos, sin, *args, **kwargs)
        return rotary_with_matrix(q, k, cos, sin, **kwargs)

    return apply
