"""Gateway failure policy (docs/failure-policy.md): a task is validated fully before any state changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator_gateway.gateway.gateway import Gateway
from fl_protocol.errors import ProtocolError
from tests.kit.fleet import CLOUD, GATEWAY, ManualClock, public_keys
from tests.kit.gateway import make_gateway, send_task
from tests.kit.tasks import round_task, staggered_deadlines_ms

DEVICES = ["d0", "d1", "d2"]
KEYS = public_keys([CLOUD, GATEWAY, *DEVICES])


def _send_task(gateway: Gateway, round_id: int) -> None:
    send_task(gateway, round_task(round_id, deadlines_ms=staggered_deadlines_ms()), KEYS)


def test_a_task_the_gateway_cannot_run_leaves_the_active_round_and_the_store_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, bytes]] = []
    gateway = make_gateway(tmp_path, keys=KEYS, devices=DEVICES, clock=ManualClock(), sent=sent)
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
