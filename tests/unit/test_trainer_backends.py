"""Trainer backends: ONNX Runtime and torch train the same bundle to the same vector, only LoRA moves.

Tolerances: both backends run the same float32 computation (the ONNX graph was traced from the very
torch model the torch backend rebuilds), so they differ only by kernel summation order, ~1e-7 relative
in losses and gradients. AdamW normalises each gradient element, so one step moves a value by at most
about the learning rate (1e-3 here) whatever the gradient's size; a rounding-level gradient difference
changes that move by far less. After 5 steps the vectors have moved ~5e-3; we require agreement to
1e-5 (1% of one step), and observe ~1e-7. Losses agree to 1e-5 (observed ~2e-7 on losses ~5.6).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.trainer import TrainerError, create_trainer
from edge_runtime.trainer.base import IGNORE_INDEX
from fl_protocol.manifest import BundleError
from tests.kit.bundles import export_tiny_llama

VOCAB = 260  # tiny-llama (byte tokenizer)
LR = 1e-3
STEPS = 5
ATOL_VECTOR = 1e-5
ATOL_LOSS = 1e-5
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle(tiny_llama_bundle: Path) -> Path:
    """The session's tiny-llama bundle (tests/conftest.py); tests copy it before changing it."""
    return tiny_llama_bundle


@pytest.fixture(scope="module")
def ffa_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trainer_ffa") / "bundle"
    export_tiny_llama(out, ffa=True)
    return out


def make_batches(
    count: int, *, batch_size: int = 2, seq_len: int = 32, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """Random token batches, the last row of each padded from the middle on (exercises ignore_index)."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        ids = rng.integers(0, VOCAB, size=(batch_size, seq_len), dtype=np.int64)
        mask = np.ones_like(ids)
        mask[-1, seq_len // 2 :] = 0
        labels = np.where(mask == 1, ids, IGNORE_INDEX)
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


def start_vector(length: int) -> np.ndarray:
    # Non-zero B everywhere: with peft's B = 0 start, A's first gradient is exactly zero.
    return np.random.default_rng(1).normal(0.0, 0.05, length).astype(np.float32)


def _train_both(bundle_dir: Path) -> dict[str, tuple[np.ndarray, float, float]]:
    results = {}
    for backend in ("ort", "torch"):
        with create_trainer(bundle_dir, backend=backend, device="cpu") as trainer:
            trainer.set_trainable(start_vector(trainer.total_length))
            batches = make_batches(STEPS)
            before = trainer.evaluate(batches)
            trainer.train(batches, steps=STEPS, learning_rate=LR)
            results[backend] = (trainer.get_trainable(), before, trainer.evaluate(batches))
    return results


@pytest.mark.parametrize("which", ["bundle", "ffa_bundle"])
def test_backends_train_to_the_same_vector(which: str, request: pytest.FixtureRequest) -> None:
    results = _train_both(request.getfixturevalue(which))
    ort_vec, ort_before, ort_after = results["ort"]
    torch_vec, torch_before, torch_after = results["torch"]
    moved = np.abs(ort_vec - start_vector(len(ort_vec))).max()
    assert moved > 100 * ATOL_VECTOR, "training did not move the vector; the comparison would be vacuous"
    np.testing.assert_allclose(ort_vec, torch_vec, rtol=0, atol=ATOL_VECTOR)
    assert abs(ort_before - torch_before) < ATOL_LOSS
    assert abs(ort_after - torch_after) < ATOL_LOSS
    assert ort_after < ort_before  # a few steps on these batches lower their loss


@pytest.mark.parametrize("backend", ["ort", "torch"])
def test_set_get_round_trip_and_initial_vector(bundle: Path, backend: str) -> None:
    from fl_protocol.flatvec import load_flat_vector

    with create_trainer(bundle, backend=backend, device="cpu") as trainer:
        initial = load_flat_vector(bundle / "initial_vector.safetensors").values
        np.testing.assert_array_equal(trainer.get_trainable(), initial)
        vector = start_vector(trainer.total_length)
        trainer.set_trainable(vector)
        np.testing.assert_array_equal(trainer.get_trainable(), vector)
        with pytest.raises(TrainerError, match="shape"):
            trainer.set_trainable(vector[:-1])
        bad = vector.copy()
        bad[3] = np.nan
        with pytest.raises(TrainerError, match="NaN"):
            trainer.set_trainable(bad)


@pytest.mark.parametrize("backend", ["ort", "torch"])
def test_only_lora_changes(bundle: Path, backend: str) -> None:
    with create_trainer(bundle, backend=backend, device="cpu") as trainer:
        vector = start_vector(trainer.total_length)
        trainer.set_trainable(vector)
        frozen_before = trainer.frozen_parameters()
        assert len(frozen_before) > 10  # embeddings, projections, norms, lm_head
        trainer.train(make_batches(3), steps=3, learning_rate=LR)
        assert np.abs(trainer.get_trainable() - vector).max() > 1e-4
        frozen_after = trainer.frozen_parameters()
        assert frozen_after.keys() == frozen_before.keys()
        for name, value in frozen_before.items():
            np.testing.assert_array_equal(frozen_after[name], value, err_msg=name)


@pytest.mark.parametrize("backend", ["ort", "torch"])
def test_optimizer_state_resets_with_new_values_and_continues_otherwise(bundle: Path, backend: str) -> None:
    batches = make_batches(4)
    with create_trainer(bundle, backend=backend, device="cpu") as trainer:
        vector = start_vector(trainer.total_length)
        trainer.set_trainable(vector)
        first = trainer.train(batches, steps=4, learning_rate=LR)
        four_steps = trainer.get_trainable()
        trainer.set_trainable(vector)  # a new round: fresh AdamW state
        again = trainer.train(batches, steps=4, learning_rate=LR)
        np.testing.assert_array_equal(trainer.get_trainable(), four_steps)
        assert again.mean_loss == first.mean_loss
        trainer.set_trainable(vector)
        trainer.train(batches[:2], steps=2, learning_rate=LR)
        trainer.train(batches[2:], steps=2, learning_rate=LR)  # continues moments and step count
        np.testing.assert_allclose(trainer.get_trainable(), four_steps, rtol=0, atol=1e-7)
        trainer.reset_optimizer()
        trainer.train(batches[:1], steps=1, learning_rate=LR)
        assert np.abs(trainer.get_trainable() - four_steps).max() > 1e-5


@pytest.mark.parametrize("backend", ["ort", "torch"])
def test_tampered_bundle_is_refused(bundle: Path, backend: str, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    target = copy / ("checkpoint" if backend == "ort" else "base_model/model.safetensors")
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="modified"):
        create_trainer(copy, backend=backend, device="cpu")


def test_backend_override_and_auto_selection(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with create_trainer(bundle) as auto:
        assert auto.backend_name == "ort"
        assert auto.providers == ["CPUExecutionProvider"]  # CPU-only onnxruntime-training build here
        assert "auto" in auto.selection_reason
    with create_trainer(bundle, backend="torch") as forced:
        assert forced.backend_name == "torch"
        assert forced.providers == ["cpu"]
        assert "requested" in forced.selection_reason
    monkeypatch.setitem(sys.modules, "onnxruntime.capi._pybind_state", None)  # as on a device without ORT
    with create_trainer(bundle) as fallback:
        assert fallback.backend_name == "torch"
        assert "ONNX Runtime training unavailable" in fallback.selection_reason
    with pytest.raises(TrainerError, match="backend 'ort' requested"):
        create_trainer(bundle, backend="ort")
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(TrainerError, match="no training backend available.*pip install"):
        create_trainer(bundle)


def test_ort_backend_runs_without_torch(bundle: Path) -> None:
    # A device install has no torch: make it unimportable, then load, train one step and evaluate.
    # (`onnxruntime.training.api` would fail here: its package imports torch; see ort_session.py.)
    code = (
        "import sys\n"
        "for name in ('torch', 'transformers', 'peft'): sys.modules[name] = None\n"
        "import numpy as np\n"
        "from edge_runtime.trainer import create_trainer\n"
        f"t = create_trainer({str(bundle)!r})\n"
        "ids = np.arange(64, dtype=np.int64).reshape(2, 32)\n"
        "batch = {'input_ids': ids, 'attention_mask': np.ones_like(ids), 'labels': ids}\n"
        "r = t.train([batch], steps=1, learning_rate=1e-3)\n"
        "print(t.backend_name, r.steps, t.evaluate([batch]) > 0, "
        "sorted(m for m in sys.modules if m.split('.')[0] == 'export'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ort 1 True []"
