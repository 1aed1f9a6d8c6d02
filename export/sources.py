"""Where the base model comes from: a built-in tiny config (random weights from a seed) or a local HF dir.

No network access ever: built-ins are constructed from configs, local directories are loaded with
`local_files_only=True`. Dropout is forced to 0 everywhere because ONNX Runtime's gradient builder
cannot train through exported dropout for every family (GPT-2 fails), and federated LoRA does not need it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from export.errors import ExportError
from fl_protocol.tokenizer import BOS_ID, BYTE_VOCAB_SIZE, EOS_ID, PAD_ID

SUPPORTED_FAMILIES = ("llama", "qwen2", "mistral", "gpt2")
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "gpt2": ("c_attn",),
}
_DROPOUT_FIELDS = (
    "attention_dropout",
    "hidden_dropout",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "summary_first_dropout",
)

_BYTE_SPECIALS = {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}

# Built-in tiny models: small enough to train on a 2-core box in seconds, large enough to learn bytes.
BUILTIN_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny-llama": {
        "model_type": "llama",
        "vocab_size": BYTE_VOCAB_SIZE,
        "hidden_size": 64,
        "intermediate_size": 176,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "tie_word_embeddings": False,
        **_BYTE_SPECIALS,
    },
    "tiny-gpt2": {
        "model_type": "gpt2",
        "vocab_size": BYTE_VOCAB_SIZE,
        "n_embd": 64,
        "n_layer": 2,
        "n_head": 4,
        "n_positions": 512,
        **_BYTE_SPECIALS,
    },
}


@dataclass
class LoadedModel:
    """A base model ready for LoRA, with where it came from."""

    model: PreTrainedModel
    family: str
    source: str  # "builtin:tiny-llama" or "path:/abs/dir"
    source_dir: Path | None  # local directory (tokenizer files live there), None for built-ins
    gguf: dict[str, str] | None = None  # {"file", "sha256"} when the model came from a GGUF file


def _no_dropout(config: PretrainedConfig) -> None:
    for field in _DROPOUT_FIELDS:
        if hasattr(config, field):
            setattr(config, field, 0.0)
    config.use_cache = False


def _family_of(config: PretrainedConfig, where: str) -> str:
    family = getattr(config, "model_type", None)
    if family not in SUPPORTED_FAMILIES:
        raise ExportError(
            f"{where}: unsupported architecture {family!r}; fedlora exports causal LMs of the "
            f"{', '.join(SUPPORTED_FAMILIES)} families"
        )
    return str(family)


def build_builtin(name: str, *, seed: int) -> LoadedModel:
    """Construct a built-in tiny model with weights drawn from `seed` (reproducible, no download)."""
    if name not in BUILTIN_CONFIGS:
        raise ExportError(f"unknown built-in model {name!r}; choose one of {', '.join(BUILTIN_CONFIGS)}")
    values = dict(BUILTIN_CONFIGS[name])
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    _no_dropout(config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    return LoadedModel(model.eval(), _family_of(config, name), f"builtin:{name}", None)


def load_local(path: Path) -> LoadedModel:
    """Load a causal LM from a local Hugging Face directory (config.json + weights), offline only."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise ExportError(f"model path {path} does not exist")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ExportError(f"{path} has no config.json: not a Hugging Face model directory")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except ValueError as exc:
        raise ExportError(f"{config_file} is not valid JSON: {exc}") from exc
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    family = _family_of(config, str(path))
    _no_dropout(config)
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    if not has_weights:
        raise ExportError(f"{path} ({model_type}) has no weights (*.safetensors or *.bin)")
    model = AutoModelForCausalLM.from_pretrained(
        path, config=config, local_files_only=True, dtype=torch.float32
    )
    return LoadedModel(model.eval(), family, f"path:{path}", path)


def load_source(
    spec: str, *, seed: int, cache_dir: Path | None = None, progress: Callable[[str], None] = print
) -> LoadedModel:
    """`spec` is a built-in tiny name, a built-in GGUF name (smollm2-135m), a .gguf file, a directory
    holding one .gguf file, or a local Hugging Face directory.

    GGUF sources are converted once into `cache_dir` (default: `export.gguf.default_cache_dir()`).
    """
    if spec in BUILTIN_CONFIGS:
        return build_builtin(spec, seed=seed)
    from export import gguf  # the gguf package is needed only for GGUF sources

    gguf_file = gguf.find_gguf(spec)
    if gguf_file is None:
        return load_local(Path(spec))
    hf_dir, sha = gguf.converted_dir(gguf_file, cache_dir or gguf.default_cache_dir(), progress)
    loaded = load_local(hf_dir)
    loaded.gguf = {"file": str(gguf_file), "name": spec, "sha256": sha}
    return loaded
