"""Gateway failure policy (docs/failure-policy.md): a task is validated fully before any state changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator_gateway.gateway.gateway import Gateway
from fl_protocol.errors import ProtocolError
from tests.unit.test_gateway_node import Clock, _gateway, _send_task


def test_a_task_the_gateway_cannot_run_leaves_the_active_round_and_the_store_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, bytes]] = []
    gateway = _gateway(tmp_path, Clock(), sent)
    _send_task(gateway, 1)
    active = gateway.driver
    assert active is not None and not active.finished

    def unrunnable(self: Gateway, task: object, seed: bytes) -> None:
        raise ValueError("threshold_fraction must be in [0.5, 1)")

    monkeypatch.setattr(Gateway, "_new_driver", unrunnable)
    with pytest.raises(ProtocolError, match="round 2 cannot be run here"):  # one warning line in the loop
        _send_task(gateway, 2)
    assert gateway.driver is active and not active.finished  # not superseded, not aborted
    latest = gateway.store.latest_round()
    assert latest is not None and latest.round_id == 1 and latest.state == "active"
    assert sent == []  # no Abort published for round 1
