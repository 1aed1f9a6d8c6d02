"""ORT session options of the on-device trainer (edge_runtime/trainer/ort_session.py)."""

from __future__ import annotations

import pytest

from edge_runtime.trainer.ort_session import session_options, training_bindings


def test_pool_threads_sleep_by_default_and_spinning_can_be_restored() -> None:
    capi = training_bindings()
    quiet = session_options(capi)
    assert quiet.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert quiet.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert quiet.intra_op_num_threads == 0  # one per physical core
    spinning = session_options(capi, intra_op_threads=1, spinning=True)
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert spinning.intra_op_num_threads == 1


def test_negative_thread_count_is_refused() -> None:
    with pytest.raises(ValueError, match="intra_op_threads"):
        session_options(training_bindings(), intra_op_threads=-1)
