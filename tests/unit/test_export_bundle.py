"""Export: ORT training artifacts match torch, train only LoRA, and round-trip into a PEFT adapter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, GPT2Config, Qwen2Config

from export.adapter import write_adapter
from export.errors import ExportError
from export.lora import LoraSettings, attach_lora
from export.onnx_graph import WRAPPER_PREFIX, CausalLMWithLoss, example_batch, graph_loss, shift_labels
from export.ort_artifacts import open_module, write_contiguous
from export.pipeline import ExportOptions, run_export
from fl_protocol.flatvec import FlatVector, load_flat_vector, save_flat_vector
from fl_protocol.manifest import BundleError, Manifest, load_manifest
from fl_protocol.tokenizer import BYTE_VOCAB_SIZE
from tests.kit.bundles import tiny_llama_config

TOL = 1e-4
CONFIGS = {
    "llama": tiny_llama_config,
    "qwen2": lambda: Qwen2Config(
        vocab_size=BYTE_VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    ),
    "gpt2": lambda: GPT2Config(vocab_size=BYTE_VOCAB_SIZE, n_embd=32, n_layer=2, n_head=4, n_positions=64),
}


def _save_hf_model(family: str, where: Path) -> Path:
    torch.manual_seed(7)
    AutoModelForCausalLM.from_config(CONFIGS[family]()).save_pretrained(where)
    return where


def _export(src: Path, out: Path, *, ffa: bool = False) -> Manifest:
    options = ExportOptions(
        model=str(src), out_dir=out, lora_r=4, lora_alpha=8.0, ffa=ffa, seq_len=16, tokenizer="byte"
    )
    return run_export(options, progress=lambda _line: None)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def exported(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Manifest]:
    root = tmp_path_factory.mktemp(request.param)
    src = _save_hf_model(request.param, root / "hf")
    return src, _export(src, root / "bundle")


def _torch_reference(src: Path, manifest: Manifest, flat: np.ndarray) -> CausalLMWithLoss:
    """The same LoRA model in torch eager, with the flat vector loaded into its LoRA parameters."""
    base = AutoModelForCausalLM.from_pretrained(src)
    lora = manifest.raw["lora"]
    peft_model = attach_lora(
        base, LoraSettings(lora["r"], lora["alpha"], tuple(lora["targets"]), lora["ffa"], lora["init_seed"])
    )
    params = dict(peft_model.named_parameters())
    with torch.no_grad():
        for t in manifest.trainable_tensors:
            values = flat[t.offset : t.offset + t.length].reshape(t.shape)
            params[t.name.removeprefix(WRAPPER_PREFIX)].copy_(torch.from_numpy(values))
    return CausalLMWithLoss(peft_model).eval()


def _batch(seq_len: int = 12, batch_size: int = 3) -> dict[str, np.ndarray]:
    # A shape different from the one traced at export (2 x 8): checks the dynamic axes really are dynamic.
    return {
        k: v.numpy()
        for k, v in example_batch(
            batch_size=batch_size, seq_len=seq_len, vocab_size=BYTE_VOCAB_SIZE, seed=3
        ).items()
    }


def test_ort_loss_matches_torch(exported: tuple[Path, Manifest]) -> None:
    src, manifest = exported
    _, module = open_module(manifest.bundle_dir)
    flat = np.random.default_rng(0).normal(0, 0.05, manifest.total_length).astype(np.float32)
    write_contiguous(module, flat)
    reference = _torch_reference(src, manifest, flat)
    for seq_len, batch_size in ((12, 3), (16, 1)):
        batch = _batch(seq_len, batch_size)
        module.train()
        ort_loss = float(module(batch["input_ids"], batch["attention_mask"], batch["labels"]))  # loss only
        with torch.no_grad():
            torch_loss, _ = reference(
                *(torch.from_numpy(batch[k]) for k in ("input_ids", "attention_mask", "labels"))
            )
        assert abs(ort_loss - float(torch_loss)) < TOL, (seq_len, batch_size, ort_loss, float(torch_loss))


def test_training_model_outputs_only_the_loss_and_eval_model_the_logits_too(
    exported: tuple[Path, Manifest],
) -> None:
    import onnx

    _, manifest = exported
    outputs = {}
    for kind in ("training_model", "eval_model"):
        graph = onnx.load(str(manifest.path(manifest.raw["artifacts"][kind])), load_external_data=False).graph
        outputs[kind] = [o.name for o in graph.output if not o.name.endswith("_grad.accumulation.out")]
    assert outputs == {"training_model": ["loss"], "eval_model": ["loss", "logits"]}


def test_loss_on_shifted_labels_equals_loss_on_sliced_logits() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11)
    labels = torch.randint(0, 11, (3, 7))
    labels[2, 4:] = -100  # right padding
    labels[1, :2] = -100  # left padding
    sliced = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    shifted = shift_labels(labels)
    assert shifted.dtype == labels.dtype and shifted.shape == labels.shape
    assert torch.equal(shifted[:, -1], torch.full((3,), -100))
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), shifted.reshape(-1), ignore_index=-100)
    assert abs(float(loss) - float(sliced)) < 1e-6


def test_graph_loss_equals_cross_entropy_with_ignored_targets() -> None:
    torch.manual_seed(1)
    hidden = torch.randn(6, 5, requires_grad=True)
    weight = torch.randn(13, 5)
    targets = torch.tensor([3, -100, 0, 12, -100, 7])
    for scale in (1.0, 300.0):  # 300: logits in the hundreds, where exp() without a shift overflows
        logits = hidden * scale @ weight.T
        expected = torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100)
        (expected_grad,) = torch.autograd.grad(expected, hidden, retain_graph=True)
        plain = graph_loss(logits, targets)
        from_hidden = graph_loss(logits, targets, hidden=hidden * scale, weight=weight)
        for loss in (plain, from_hidden):
            assert torch.isfinite(loss)
            assert abs(loss.item() - expected.item()) < 1e-5 * max(1.0, abs(expected.item()))
            (grad,) = torch.autograd.grad(loss, hidden, retain_graph=True)
            assert torch.allclose(grad, expected_grad, rtol=1e-5, atol=1e-6 * scale)
    everything_ignored = torch.full((6,), -100)
    logits = hidden @ weight.T
    assert torch.isnan(graph_loss(logits, everything_ignored))
    assert torch.isnan(graph_loss(logits, everything_ignored, hidden=hidden, weight=weight))
    assert torch.isnan(torch.nn.functional.cross_entropy(logits, everything_ignored, ignore_index=-100))


def test_graph_traces_no_single_threaded_loss_or_copy_kernels(exported: tuple[Path, Manifest]) -> None:
    """The forms of export/onnx_graph.py and export/graph_forms.py are what was traced."""
    import onnx

    _, manifest = exported
    path = manifest.path(manifest.raw["artifacts"]["eval_model"])
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    ops = {node.op_type for node in nodes}
    assert "LogSoftmax" not in ops and "SoftmaxCrossEntropyLoss" not in ops
    assert "ReduceMax" in ops and "GatherElements" not in ops  # target logit from the hidden states
    # layer 1's attention (layer 0's scope also holds the traced mask construction)
    attention_ops = {node.op_type for node in nodes if "layers.1/self_attn/" in node.name}
    if manifest.raw["model"]["family"] != "gpt2":
        assert "MatMul" in attention_ops
        assert "Expand" not in attention_ops  # grouped-query attention: no repeat of key/value heads
        assert "Neg" not in attention_ops  # rotate_half is a MatMul


def test_one_step_changes_only_lora(exported: tuple[Path, Manifest]) -> None:
    from onnxruntime.training.api import Optimizer

    _, manifest = exported
    state, module = open_module(manifest.bundle_dir)
    optimizer = Optimizer(str(manifest.path("optimizer_model.onnx")), module)
    # LoRA starts with B = 0, where A's gradient is exactly zero; start from a generic point instead.
    write_contiguous(
        module, np.random.default_rng(1).normal(0, 0.05, manifest.total_length).astype(np.float32)
    )
    trainable = {t.name for t in manifest.trainable_tensors}
    before = {name: param.data.copy() for name, param in state.parameters}
    batch = _batch()
    module.train()
    module(batch["input_ids"], batch["attention_mask"], batch["labels"])
    optimizer.step()
    changed = {name for name, param in state.parameters if not np.array_equal(param.data, before[name])}
    assert changed == trainable
    for name, param in state.parameters:
        if name not in trainable:
            assert param.data.tobytes() == before[name].tobytes(), f"base weight {name} changed"


def test_ffa_trains_only_b(tmp_path: Path) -> None:
    from onnxruntime.training.api import Optimizer

    src = _save_hf_model("llama", tmp_path / "hf")
    manifest = _export(src, tmp_path / "bundle", ffa=True)
    names = [t.name for t in manifest.trainable_tensors]
    assert names and all(".lora_B." in n for n in names)
    state, module = open_module(manifest.bundle_dir)
    a_before = {n: p.data.copy() for n, p in state.parameters if ".lora_A." in n}
    assert a_before, "FFA bundle lost its frozen A matrices"
    module.train()
    batch = _batch()
    module(batch["input_ids"], batch["attention_mask"], batch["labels"])
    Optimizer(str(manifest.path("optimizer_model.onnx")), module).step()
    for n, p in state.parameters:
        if n in a_before:
            assert np.array_equal(p.data, a_before[n])


def test_trained_vector_becomes_peft_adapter_with_same_logits(
    exported: tuple[Path, Manifest], tmp_path: Path
) -> None:
    from onnxruntime.training.api import Optimizer

    src, manifest = exported
    _, module = open_module(manifest.bundle_dir)
    optimizer = Optimizer(str(manifest.path("optimizer_model.onnx")), module)
    batch = _batch()
    module.train()
    for _ in range(3):
        module(batch["input_ids"], batch["attention_mask"], batch["labels"])
        optimizer.step()
        module.lazy_reset_grad()
    flat = module.get_contiguous_parameters(trainable_only=True).numpy().copy()
    weights = tmp_path / "global.safetensors"
    save_flat_vector(weights, FlatVector(flat, manifest.bundle_id, 3))
    adapter_dir = write_adapter(manifest.bundle_dir, weights, tmp_path / "adapter")
    module.eval()
    ort_logits = module(batch["input_ids"], batch["attention_mask"], batch["labels"])[1]
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(src), str(adapter_dir)).eval()
    with torch.no_grad():
        torch_logits = peft_model(
            input_ids=torch.from_numpy(batch["input_ids"]),
            attention_mask=torch.from_numpy(batch["attention_mask"]),
        ).logits.numpy()
    assert np.abs(flat - load_flat_vector(manifest.path("initial_vector.safetensors")).values).max() > 0
    np.testing.assert_allclose(ort_logits, torch_logits, atol=TOL, rtol=0)


def test_initial_vector_matches_ort_checkpoint(exported: tuple[Path, Manifest]) -> None:
    _, manifest = exported
    _, module = open_module(manifest.bundle_dir)
    initial = load_flat_vector(
        manifest.path("initial_vector.safetensors"), expected_bundle_id=manifest.bundle_id
    )
    assert initial.model_version == 0
    np.testing.assert_array_equal(
        module.get_contiguous_parameters(trainable_only=True).numpy(), initial.values
    )


def test_tampered_artifact_is_refused(tmp_path: Path) -> None:
    src = _save_hf_model("gpt2", tmp_path / "hf")
    manifest = _export(src, tmp_path / "bundle")
    load_manifest(manifest.bundle_dir)  # intact bundle verifies
    target = manifest.path("eval_model.onnx")
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="eval_model.onnx was modified"):
        load_manifest(manifest.bundle_dir)


def test_vector_from_another_bundle_is_refused(exported: tuple[Path, Manifest], tmp_path: Path) -> None:
    _, manifest = exported
    weights = tmp_path / "foreign.safetensors"
    save_flat_vector(weights, FlatVector(np.zeros(manifest.total_length, np.float32), "0" * 64, 1))
    from fl_protocol.errors import DecodeError

    with pytest.raises(DecodeError, match=r"flat vector belongs to a different bundle \(bundle id"):
        write_adapter(manifest.bundle_dir, weights, tmp_path / "adapter")


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        _export(tmp_path / "nope", tmp_path / "b1")
    from transformers import BertConfig

    BertConfig(
        vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(ExportError, match="unsupported architecture 'bert'"):
        _export(tmp_path / "bert", tmp_path / "b2")
    src = _save_hf_model("llama", tmp_path / "hf")
    with pytest.raises(ExportError, match="target modules not found in the model: nonexistent"):
        run_export(
            ExportOptions(
                model=str(src), out_dir=tmp_path / "b3", targets=("nonexistent",), tokenizer="byte"
            ),
            progress=lambda _l: None,
        )


def test_cloud_writes_the_final_adapter(exported: tuple[Path, Manifest], tmp_path: Path) -> None:
    from aggregator_gateway.cloud.final_output import write_final_adapter

    _, manifest = exported
    weights = tmp_path / "final.safetensors"
    save_flat_vector(weights, FlatVector(np.ones(manifest.total_length, np.float32), manifest.bundle_id, 5))
    adapter = write_final_adapter(manifest.bundle_dir, weights, tmp_path / "adapter")
    assert adapter is not None and (adapter / "adapter_config.json").is_file()
    assert write_final_adapter(manifest.bundle_dir, tmp_path / "missing.safetensors", tmp_path / "a2") is None


def test_num_parameters_counts_each_base_tensor_once(exported: tuple[Path, Manifest]) -> None:
    src, manifest = exported
    base = AutoModelForCausalLM.from_pretrained(src)
    unique = sum(p.numel() for p in base.parameters())  # parameters() yields a tied tensor once
    state_dict_total = sum(v.numel() for v in base.state_dict().values())
    assert manifest.raw["model"]["num_parameters"] == unique
    if manifest.raw["model"]["tie_word_embeddings"]:
        assert state_dict_total > unique  # the old count (state dict) had the embedding twice
