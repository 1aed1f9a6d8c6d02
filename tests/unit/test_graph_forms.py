"""Export-only forms of rotary embedding and attention (export/graph_forms.py) equal the model's own."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.models.llama import modeling_llama

from export.graph_forms import (
    EXPORT_ATTENTION,
    export_forms,
    grouped_query_attention,
    is_standard_rotary,
    matrix_form_of,
    rotary_with_matrix,
    rotate_half_matrix,
)
from tests.kit.bundles import tiny_llama_config


def test_rotate_half_is_a_matmul() -> None:
    x = torch.randn(2, 3, 5, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x @ rotate_half_matrix(16, x.dtype), modeling_llama.rotate_half(x))


def test_rotary_with_matrix_equals_apply_rotary_pos_emb() -> None:
    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 6, 7, 8, generator=gen), torch.randn(2, 2, 7, 8, generator=gen)
    cos, sin = torch.randn(2, 7, 8, generator=gen), torch.randn(2, 7, 8, generator=gen)
    expected = modeling_llama.apply_rotary_pos_emb(q, k, cos, sin)
    got = rotary_with_matrix(q, k, cos, sin)
    for a, b in zip(got, expected, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


class _Heads(torch.nn.Module):
    num_key_value_groups = 3
    training = False


@pytest.mark.parametrize("masked", [False, True])
def test_grouped_attention_equals_eager_attention_with_repeated_heads(masked: bool) -> None:
    gen = torch.Generator().manual_seed(2)
    query = torch.randn(2, 6, 5, 4, generator=gen)
    key, value = torch.randn(2, 2, 5, 4, generator=gen), torch.randn(2, 2, 5, 4, generator=gen)
    mask = None
    if masked:  # causal, and the second row's first two keys padded away
        mask = torch.full((5, 5), float("-inf")).triu(1).expand(2, 1, 5, 5).clone()
        mask[1, :, :, :2] = torch.finfo(torch.float32).min
    expected, _ = modeling_llama.eager_attention_forward(_Heads(), query, key, value, mask, scaling=0.5)
    got, _ = grouped_query_attention(_Heads(), query, key, value, mask, scaling=0.5)
    assert got.shape == expected.shape == (2, 5, 6, 4)
    assert torch.allclose(got, expected, atol=1e-6)
    with pytest.raises(ValueError, match="dropout"):
        grouped_query_attention(_Heads(), query, key, value, mask, scaling=0.5, dropout=0.1)


def test_export_forms_swaps_and_restores_the_model_code_and_keeps_its_output() -> None:
    config = tiny_llama_config(vocab_size=50, intermediate_size=48, max_position_embeddings=32)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    ids = torch.randint(0, 50, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    expected = model(input_ids=ids, attention_mask=mask).logits
    original = modeling_llama.apply_rotary_pos_emb
    with export_forms(model):
        assert modeling_llama.apply_rotary_pos_emb is not original
        assert model.config._attn_implementation == EXPORT_ATTENTION
        got = model(input_ids=ids, attention_mask=mask).logits
    assert modeling_llama.apply_rotary_pos_emb is original
    assert model.config._attn_implementation == "eager"
    assert torch.allclose(got, expected, atol=1e-5)
    with pytest.raises(RuntimeError, match="boom"), export_forms(model):
        raise RuntimeError("boom")
    assert modeling_llama.apply_rotary_pos_emb is original
    assert model.config._attn_implementation == "eager"


def test_output_layer_is_used_only_where_the_logits_are_exactly_head_of_hidden() -> None:
    from export.onnx_graph import example_batch, find_output_layer

    config = tiny_llama_config(
        vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    batch = example_batch(batch_size=2, seq_len=6, vocab_size=40, seed=0)
    found = find_output_layer(model, batch)
    assert found is not None and found[0] is model.model and found[1] is model.lm_head
    model.lm_head = torch.nn.Linear(16, 40, bias=True)  # a bias: the target logit is not hidden . row
    assert find_output_layer(model, batch) is None
    model.lm_head = torch.nn.Linear(16, 40, bias=False)
    original = model.forward

    def scaled(*args, **kwargs):  # a family that scales its logits after the output layer
        out = original(*args, **kwargs)
        out.logits = out.logits * 0.5
        return out

    model.forward = scaled  # type: ignore[method-assign]
    assert find_output_layer(model, batch) is None


def test_only_the_standard_full_width_rotary_is_replaced() -> None:
    assert is_standard_rotary(modeling_llama.apply_rotary_pos_emb)
    assert not is_standard_rotary(lambda q, k, cos, sin: (q, k))  # a different function
    assert not is_standard_rotary(lambda q, k, cos, sin, position_ids: (q, k))  # a different signature
    calls: list[str] = []

    def partial_rotary(q, k, cos, sin, unsqueeze_dim=1):  # rotates only the first cos.shape[-1] dims
        calls.append("original")
        return q, k

    form = matrix_form_of(partial_rotary)
    gen = torch.Generator().manual_seed(3)
    q, k = torch.randn(1, 2, 3, 8, generator=gen), torch.randn(1, 2, 3, 8, generator=gen)
    form(q, k, torch.randn(1, 3, 4, generator=gen), torch.randn(1, 3, 4, generator=gen))
    assert calls == ["original"]  # cos/sin narrower than the head: not the full-width form
    cos, sin = torch.randn(1, 3, 8, generator=gen), torch.randn(1, 3, 8, generator=gen)
    got = form(q, k, cos, sin)
    assert calls == ["original"]
    for a, b in zip(got, modeling_llama.apply_rotary_pos_emb(q, k, cos, sin), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
