"""Issue 12 finding 1 against a real mosquitto: the cloud's failure policy (docs/failure-policy.md).

- A device's retained status with `{"round": 2, "train_loss": 2**1100}` used to make the cloud raise
  OverflowError at the next round start and stay idle forever; now it is rejected with one log line and every
  round completes.
- An OSError injected into the cloud's round close used to leave it with no round and done=False for good;
  now `fedlora cloud` exits with code 70, and the restarted cloud settles the interrupted round from its
  store and finishes with the same model as an uninterrupted run.

The cloud runs `fedlora.cli.main(["cloud", ...])` on a thread (the process's code path minus the interpreter)
with the scripted gateways of tests/integration/test_cloud.py.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aggregator_gateway.cloud.store import ModelStore
from fedlora import cli
from fl_protocol.errors import EXIT_ROLE_FAULT
from fl_protocol.topics import status_topic
from fl_protocol.wire.fields import encode_fields
from fl_protocol.wire.framing import FrameHeader, encode_frame
from fl_protocol.wire.messages import Status
from tests.integration import test_cloud as base
from tests.integration.mosquitto_fixture import MosquittoHandle
from tests.kit.mqtt import connect
from tests.kit.waits import wait_until

pytestmark = pytest.mark.integration


def _federation(tmp_path: Path, port: int) -> tuple[dict[str, Any], Path, np.ndarray]:
    initial = np.linspace(-1, 1, base.DIM).astype(np.float32)
    config, keys = base.write_federation(tmp_path, port, initial)
    return keys, config, initial


def _run_cloud(config: Path, result: dict[str, int], key: str) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: result.update({key: cli.main(["cloud", "--config", str(config)])})
    )
    thread.start()
    return thread


def _states(root: Path) -> list[tuple[int, str, int]]:
    report = json.loads((root / "store" / "rounds.json").read_text())
    return [(r["round"], r["state"], r["model_version"]) for r in report["rounds"]]


def test_a_device_status_with_a_huge_loss_is_rejected_with_one_line(
    mosquitto: MosquittoHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = mosquitto.port
    keys, config, _initial = _federation(tmp_path, port)
    stop, seen, result = threading.Event(), [], {}
    caplog.set_level(logging.WARNING)
    try:
        device, _ = connect(port, "dev1")
        # Signed by the device's real key; the body bypasses Status's own validation, as an attacker's would.
        fields = {"node": "dev1", "state": "idle", "reason": "", "time_ms": 1}
        body = encode_fields({**fields, "details": {"round": 2, "train_loss": 2**1100}})
        header = FrameHeader(base.FLEET, 2, "dev1", Status.MESSAGE_TYPE, 1)
        device.publish(
            status_topic(base.FLEET, "dev1"), encode_frame(header, body, keys["dev1"]), retain=True
        )
        cloud = _run_cloud(config, result, "rc")
        script = threading.Thread(target=base.scripted_gateways, args=(port, stop, seen))
        script.start()
        cloud.join(timeout=60)
        assert not cloud.is_alive(), "the cloud stalled"
        assert result["rc"] == 0
        assert _states(tmp_path) == [(1, "failed", 0), (2, "completed", 0), (3, "completed", 1)]
        about_status = [r for r in caplog.records if "status/dev1" in r.getMessage()]
        assert len(about_status) == 1 and about_status[0].levelno == logging.WARNING
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        device.stop()
    finally:
        stop.set()


def test_a_fault_in_the_round_close_exits_70_and_the_restart_finishes_from_the_store(
    mosquitto: MosquittoHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = mosquitto.port
    _keys, config, initial = _federation(tmp_path, port)
    stop, seen, result = threading.Event(), [], {}
    original = ModelStore.save_round
    fired: list[int] = []

    def failing_save_round(self: ModelStore, round_id: int, record: dict[str, Any]) -> None:
        if record["state"] == "completed" and not fired:
            fired.append(round_id)
            raise OSError(28, "No space left on device")
        original(self, round_id, record)

    monkeypatch.setattr(ModelStore, "save_round", failing_save_round)
    script = threading.Thread(target=base.scripted_gateways, args=(port, stop, seen))
    try:
        script.start()
        first = _run_cloud(config, result, "first")
        first.join(timeout=60)
        assert not first.is_alive(), "the cloud stalled after the fault instead of exiting"
        assert result["first"] == EXIT_ROLE_FAULT and fired == [2]
        assert not (tmp_path / "store" / "rounds.json").exists()

        monkeypatch.setattr(ModelStore, "save_round", original)  # the supervisor restarts it
        wait_until(  # the restart comes after the broker closed the first session, as under systemd
            lambda: "Client cloud disconnected" in mosquitto.log(),
            timeout_s=10,
            what="the broker closing the first cloud's connection",
        )
        second = _run_cloud(config, result, "second")
        second.join(timeout=60)
        assert not second.is_alive() and result["second"] == 0
        # Round 2's model version was committed before the fault: the restart records the round as
        # completed, never reuses its id, and ends with the model of an uninterrupted run.
        assert _states(tmp_path) == [(1, "failed", 0), (2, "completed", 0), (3, "completed", 1)]
        base.assert_final_model(port, tmp_path, initial)  # the restart republished deltas, kept the residual
        assert [t.round_id for t in seen] == [1, 2, 3]
    finally:
        stop.set()
        script.join(timeout=5)
