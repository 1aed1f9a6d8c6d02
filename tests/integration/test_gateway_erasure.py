"""kill -9 of a real gateway process right after it closed a round: no unmask share of that round is left
in its SQLite database or WAL file (issue 12, finding 7: the WAL used to hold every frame of the round)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from fl_protocol.topics import Stage
from fl_protocol.wire.fields import encode_fields
from tests.integration.mosquitto_fixture import HOST, free_port, start_mosquitto
from tests.integration.test_gateway import (
    DEVICES,
    ScriptedCloud,
    ScriptedDevice,
    _deadlines,
    _start_gateway,
    _stop,
    _write_gateway_dir,
)
from tests.kit.tasks import round_task
from tests.kit.waits import wait_until

pytestmark = pytest.mark.integration


class RecordingDevice(ScriptedDevice):
    """A scripted device that keeps the unmask shares it sends."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.sent_shares: list[bytes] = []
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _send(self, stage: Stage, message: object) -> None:
        if stage is Stage.UNMASK:
            shares = {**message.b_shares, **message.s_shares}  # type: ignore[attr-defined]
            # each share as the field codec writes it inside the frame (tag, length, value bytes)
            self.sent_shares += [encode_fields({"s": value})[-24:] for value in shares.values()]
        super()._send(stage, message)


def _disk_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(db.parent.glob(db.name + "*")))


def test_no_share_of_a_closed_round_survives_kill_9(tmp_path: Path) -> None:
    port = free_port()
    broker = start_mosquitto(f"listener {port} {HOST}\nallow_anonymous true\n", port, workdir=tmp_path)
    config = _write_gateway_dir(tmp_path / "gw", port)
    gateway = _start_gateway(config)
    cloud = ScriptedCloud(port)
    devices = [RecordingDevice(name, port) for name in DEVICES]
    try:
        task = round_task(
            1,
            deadlines_ms=_deadlines(
                {"advertise": 6, "shares": 7, "masked": 8, "consistency": 9, "unmask": 10, "partial": 12}
            ),
        )
        cloud.publish_task(task)
        for device in devices:
            device.join(task)
        partial = cloud.next_partial(timeout_s=20)
        assert partial.round_id == 1
        gateway.send_signal(signal.SIGKILL)  # the round is closed: its partial is out
        gateway.wait(timeout=5)
        wait_until(
            lambda: sum(len(device.sent_shares) for device in devices) >= len(DEVICES) * 2,
            timeout_s=5,
            what="the devices' unmask shares",
        )
        shares = [share for device in devices for share in device.sent_shares]
        on_disk = _disk_bytes(tmp_path / "gw" / "state.sqlite3")
        assert len(on_disk) > 0
        leaked = [share for share in shares if share in on_disk]
        assert not leaked, f"{len(leaked)} of {len(shares)} unmask shares left on disk after kill -9"
    finally:
        _stop(gateway)
        for device in devices:
            device.conn.stop()
        cloud.conn.stop()
        broker.stop()
