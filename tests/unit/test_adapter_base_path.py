"""`base_model_name_or_path` of a written adapter resolves from any working directory (issue: it was
"bundle/base_model", relative to where the cloud ran, so loading elsewhere reached for the HF hub)."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.adapter import _adapter_config


class _Manifest:
    def __init__(self, bundle_dir: Path, model: dict[str, object]) -> None:
        self.bundle_dir = bundle_dir
        self.raw = {"model": model, "lora": {"peft_config": {"r": 4, "peft_type": "LORA"}}}

    def path(self, relative: str) -> Path:
        return self.bundle_dir / relative


def test_builtin_base_model_is_recorded_as_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    manifest = _Manifest(Path("bundle"), {"source": "builtin:tiny-llama", "base_model_dir": "base_model"})
    config = _adapter_config(manifest, None)  # type: ignore[arg-type]
    assert config["base_model_name_or_path"] == str(tmp_path / "bundle" / "base_model")
    assert config["inference_mode"] is True and config["r"] == 4


def test_source_path_and_explicit_base_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    local = _Manifest(Path("b"), {"source": "path:models/smol", "base_model_dir": None})
    assert _adapter_config(local, None)["base_model_name_or_path"] == str(tmp_path / "models" / "smol")  # type: ignore[arg-type]
    hub = _Manifest(Path("b"), {"source": "HuggingFaceTB/SmolLM2-135M", "base_model_dir": None})
    assert _adapter_config(hub, None)["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M"  # type: ignore[arg-type]
    assert _adapter_config(hub, "/srv/models/smol")["base_model_name_or_path"] == "/srv/models/smol"  # type: ignore[arg-type]
