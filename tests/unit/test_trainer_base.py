"""Trainer contract: batch checks, empty inputs, diverging loss, device requests, AdamW settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_runtime.errors import NoLocalDataError
from edge_runtime.trainer import BUNDLE_ADAMW, TrainerError, choose_backend, create_trainer
from edge_runtime.trainer.base import IGNORE_INDEX, model_inputs, target_tokens
from fl_protocol.errors import ConfigError

VOCAB = 260


@pytest.fixture(scope="module")
def bundle(tiny_llama_bundle: Path) -> Path:
    """The session's tiny-llama bundle (tests/conftest.py)."""
    return tiny_llama_bundle


def _batch(seed: int = 0, *, rows: int = 2, seq: int = 16) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(seed).integers(0, VOCAB, size=(rows, seq), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "labels": ids.copy()}


def test_model_inputs_checks_and_passes_int64_through() -> None:
    batch = _batch()
    ids, mask, labels = model_inputs(batch, vocab_size=VOCAB)
    assert ids is batch["input_ids"]  # contiguous int64: no copy
    as_int32 = {k: v.astype(np.int32) for k, v in batch.items()}
    assert model_inputs(as_int32, vocab_size=VOCAB)[0].dtype == np.int64
    with pytest.raises(ConfigError, match="lacks labels"):
        model_inputs({k: v for k, v in batch.items() if k != "labels"}, vocab_size=VOCAB)
    with pytest.raises(ConfigError, match="attention_mask has shape"):
        model_inputs({**batch, "attention_mask": batch["attention_mask"][:, :-1]}, vocab_size=VOCAB)
    with pytest.raises(ConfigError, match="input_ids outside"):
        model_inputs({**batch, "input_ids": batch["input_ids"] + VOCAB}, vocab_size=VOCAB)
    with pytest.raises(ConfigError, match="shape \\[batch, seq\\]"):
        model_inputs({k: v[0] for k, v in batch.items()}, vocab_size=VOCAB)


def test_target_tokens_counts_shifted_non_padding_labels() -> None:
    labels = np.array([[5, 6, 7, IGNORE_INDEX], [IGNORE_INDEX] * 4])
    assert target_tokens(labels) == 2  # the first label of a row is never a target


@pytest.mark.parametrize("backend", ["ort", "torch"])
def test_empty_inputs_and_padding_only_batches(bundle: Path, backend: str) -> None:
    padding_only = _batch()
    padding_only["labels"][:] = IGNORE_INDEX
    with create_trainer(bundle, backend=backend, device="cpu") as trainer:
        with pytest.raises(NoLocalDataError, match=r"no training batch with target tokens \(0 empty batches"):
            trainer.train([], steps=3, learning_rate=1e-3)
        with pytest.raises(NoLocalDataError, match="no evaluation batch with target tokens"):
            trainer.evaluate([padding_only])
        result = trainer.train([padding_only, _batch(1), _batch(2)], steps=5, learning_rate=1e-3)
        assert (result.steps, result.skipped_batches, result.target_tokens) == (2, 1, 2 * 2 * 15)
        with pytest.raises(ConfigError, match="steps"):
            trainer.train([_batch()], steps=0, learning_rate=1e-3)
        with pytest.raises(ConfigError, match="learning_rate"):
            trainer.train([_batch()], steps=1, learning_rate=float("nan"))


def test_train_takes_exactly_steps_batches_from_an_iterator(bundle: Path) -> None:
    with create_trainer(bundle, backend="ort", device="cpu") as trainer:
        batches = iter([_batch(i) for i in range(5)])
        assert trainer.train(batches, steps=3, learning_rate=1e-3).steps == 3
        assert len(list(batches)) == 2  # the next round's data is not swallowed


@pytest.mark.parametrize("backend", ["ort", "torch"])
def test_non_finite_loss_stops_training_without_applying_the_update(bundle: Path, backend: str) -> None:
    with create_trainer(bundle, backend=backend, device="cpu") as trainer:
        huge = np.full(trainer.total_length, 1e30, dtype=np.float32)  # finite, but B·A overflows
        trainer.set_trainable(huge)
        with pytest.raises(TrainerError, match="loss became"):
            trainer.train([_batch()], steps=1, learning_rate=1e-3)
        np.testing.assert_array_equal(trainer.get_trainable(), huge)


def test_device_and_backend_requests_are_validated(bundle: Path) -> None:
    with pytest.raises(ConfigError, match="backend must be one of"):
        choose_backend("tensorflow")
    with pytest.raises(ConfigError, match="device must be one of"):
        create_trainer(bundle, device="tpu")
    # CPU-only builds here: an explicit CUDA request must fail loudly, never fall back silently.
    for backend in ("ort", "torch"):
        with pytest.raises(TrainerError, match="cuda"):
            create_trainer(bundle, backend=backend, device="cuda")


def test_bundle_optimizer_matches_the_settings_the_torch_backend_reproduces(bundle: Path) -> None:
    graph = onnx.load(str(bundle / "optimizer_model.onnx"))
    (node,) = [n for n in graph.graph.node if n.op_type == "AdamWOptimizer"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["alpha"] == pytest.approx(BUNDLE_ADAMW.beta1)
    assert attrs["beta"] == pytest.approx(BUNDLE_ADAMW.beta2)
    assert attrs["epsilon"] == pytest.approx(BUNDLE_ADAMW.eps)
    assert attrs["weight_decay"] == pytest.approx(BUNDLE_ADAMW.weight_decay)
    assert attrs["correct_bias"] == int(BUNDLE_ADAMW.bias_correction)
    assert attrs["adam_mode"] == (1 if BUNDLE_ADAMW.hf_mode else 0)
