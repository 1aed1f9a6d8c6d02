"""ORT session options of the on-device trainer (edge_runtime/trainer/ort_session.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.trainer.ort_session import session_options, training_bindings


def test_pool_threads_spin_by_default_and_can_be_told_to_sleep() -> None:
    capi = training_bindings()
    spinning = session_options(capi)
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert spinning.get_session_config_entry("session.inter_op.allow_spinning") == "1"
    assert spinning.intra_op_num_threads == 0  # one per physical core
    quiet = session_options(capi, intra_op_threads=1, spinning=False)
    assert quiet.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert quiet.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert quiet.intra_op_num_threads == 1


def test_negative_thread_count_is_refused() -> None:
    with pytest.raises(ValueError, match="intra_op_threads"):
        session_options(training_bindings(), intra_op_threads=-1)


@pytest.mark.parametrize("spinning", [True, False])
def test_create_trainer_passes_spinning_to_the_sessions(
    tiny_llama_bundle: Path, monkeypatch: pytest.MonkeyPatch, spinning: bool
) -> None:
    """`[device] thread_spinning` reaches ONNX Runtime's session options (docs/device.md)."""
    from edge_runtime.trainer import create_trainer, ort_session

    seen: list[bool] = []
    real = ort_session.session_options

    def recording(capi: object, **kwargs: object) -> object:
        options = real(capi, **kwargs)  # type: ignore[arg-type]
        seen.append(options.get_session_config_entry("session.intra_op.allow_spinning") == "1")
        return options

    monkeypatch.setattr(ort_session, "session_options", recording)
    with create_trainer(tiny_llama_bundle, backend="ort", device="cpu", spinning=spinning) as trainer:
        assert trainer.backend_name == "ort"
    assert seen == [spinning]
