"""Write tiny Llama-architecture GGUF files with the `gguf` package's writer (tests only).

The model: hidden 32, 2 layers, 4 heads (2 KV heads), float32 tensors drawn from a seed, tied input/output
embeddings (no `output.weight`, as SmolLM2 ships it). The tokenizer: GPT-2 style byte-level BPE over the
256 byte symbols plus a few merges and one special token that is bos, eos and pad.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
from transformers.convert_slow_tokenizer import bytes_to_unicode

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 32, 2, 4, 2, 64
MERGES = ("Ġ t", "h e", "Ġt he", "i n", "o n")
SPECIAL = "<|endoftext|>"


def tiny_tokens() -> list[str]:
    """Byte symbols, merged symbols, then the special token (its id is the last)."""
    symbols = list(bytes_to_unicode().values())
    merged = ["".join(m.split(" ")) for m in MERGES]
    return [*symbols, *merged, SPECIAL]


def write_tiny_llama_gguf(
    path: Path,
    *,
    architecture: str = "llama",
    with_tokenizer: bool = True,
    seed: int = 0,
    quantize_q8: bool = False,
) -> Path:
    """Write the tiny model to `path` and return it."""
    tokens = tiny_tokens()
    vocab = len(tokens)
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny-test-llama")
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(vocab)
    if with_tokenizer:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_types([1] * (vocab - 1) + [3])  # 1 normal, 3 control
        writer.add_token_merges(list(MERGES))
        writer.add_bos_token_id(vocab - 1)
        writer.add_eos_token_id(vocab - 1)
        writer.add_pad_token_id(vocab - 1)

    def tensor(name: str, shape: tuple[int, ...], scale: float = 0.1) -> None:
        values = (rng.standard_normal(shape) * scale).astype(np.float32)
        if quantize_q8 and len(shape) == 2 and shape[-1] % 32 == 0:
            qtype = gguf.GGMLQuantizationType.Q8_0
            quantized = gguf.quants.quantize(values, qtype)
            writer.add_tensor(name, quantized, raw_shape=quantized.shape, raw_dtype=qtype)
        else:
            writer.add_tensor(name, values)

    head_dim = HIDDEN // HEADS
    tensor("token_embd.weight", (vocab, HIDDEN), 0.5)
    for i in range(LAYERS):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(HIDDEN, np.float32))
        tensor(f"blk.{i}.attn_q.weight", (HIDDEN, HIDDEN))
        tensor(f"blk.{i}.attn_k.weight", (KV_HEADS * head_dim, HIDDEN))
        tensor(f"blk.{i}.attn_v.weight", (KV_HEADS * head_dim, HIDDEN))
        tensor(f"blk.{i}.attn_output.weight", (HIDDEN, HIDDEN))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(HIDDEN, np.float32))
        tensor(f"blk.{i}.ffn_gate.weight", (FFN, HIDDEN))
        tensor(f"blk.{i}.ffn_up.weight", (FFN, HIDDEN))
        tensor(f"blk.{i}.ffn_down.weight", (HIDDEN, FFN))
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
