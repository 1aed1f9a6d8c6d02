"""Attach LoRA adapters with peft, optionally in FFA-LoRA mode (A frozen from a seed, only B trained)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

from export.errors import ExportError

ADAPTER_NAME = "default"


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters recorded in the manifest and the final adapter_config.json."""

    r: int
    alpha: float
    targets: tuple[str, ...]
    ffa: bool
    init_seed: int

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ExportError(f"--lora-r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ExportError(f"--lora-alpha must be > 0, got {self.alpha}")
        if not self.targets:
            raise ExportError("--targets is empty")


def _matching_modules(model: PreTrainedModel, targets: tuple[str, ...]) -> set[str]:
    suffixes = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return {t for t in targets if t in suffixes}


def attach_lora(model: PreTrainedModel, settings: LoraSettings) -> PeftModel:
    """Wrap `model` with LoRA on `settings.targets`; all base weights frozen, dropout 0.

    A is initialised from `settings.init_seed` (Kaiming-uniform, peft's default) and B to zero, so the
    adapted model starts equal to the base model. In FFA mode A is frozen: it is part of the bundle's
    fixed weights and only B is trained, which makes federated averaging exact.
    """
    found = _matching_modules(model, settings.targets)
    missing = sorted(set(settings.targets) - found)
    if missing:
        linear_names = sorted(
            {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if hasattr(m, "weight") and "." in n}
        )
        raise ExportError(
            f"target modules not found in the model: {', '.join(missing)}; "
            f"module names available include: {', '.join(linear_names[:20])}"
        )
    config = LoraConfig(
        r=settings.r,
        # peft annotates lora_alpha as int but only divides it by r; fractional alphas are valid
        lora_alpha=settings.alpha,  # type: ignore[arg-type]
        target_modules=list(settings.targets),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        fan_in_fan_out=getattr(model.config, "model_type", "") == "gpt2",  # GPT-2 uses Conv1D
    )
    torch.manual_seed(settings.init_seed)
    peft_model = get_peft_model(model, config, adapter_name=ADAPTER_NAME)
    if settings.ffa:
        for name, param in peft_model.named_parameters():
            if ".lora_A." in name:
                param.requires_grad_(False)
    return peft_model


def trainable_parameter_names(peft_model: PeftModel) -> list[str]:
    """Names (torch naming) of the parameters that will be trained on devices."""
    return [n for n, p in peft_model.named_parameters() if p.requires_grad]


def peft_key(torch_name: str) -> str:
    """Map a torch parameter name of the PEFT model to its key in a saved PEFT adapter state dict."""
    return torch_name.replace(f".{ADAPTER_NAME}.", ".")
