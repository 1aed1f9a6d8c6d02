"""The cloud closes a round early, long before its `partial` deadline, when every gateway sent a partial or
an abort (gateways publish their Abort on `round/{r}/abort/{gw}`) or when every device of the fleet sat
the round out; the log says why. Real mosquitto, the cloud through `cloud_cli.run`, scripted peers.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from aggregator_gateway import cloud_cli
from fl_protocol.identity import NodeIdentity
from fl_protocol.secagg import Abort
from fl_protocol.stages import DEADLINE_STAGES
from fl_protocol.topics import abort_topic, partial_topic, status_topic
from fl_protocol.wire.messages import PartialAggregate, RoundTask, Status
from tests.integration.mosquitto_fixture import MosquittoHandle
from tests.kit.cloud import cloud_config, write_cloud_dir
from tests.kit.fleet import Role, device, identity, public_keys, wall_clock_ms
from tests.kit.mqtt import connect

pytestmark = pytest.mark.integration
FLEET, DIM = "f1", 8
DEVICES = {"dev1": "g1", "dev2": "g2"}
ROLES = {
    "cloud": Role("cloud"),
    "g1": Role("gateway"),
    "g2": Role("gateway"),
    **{name: device(gateway) for name, gateway in DEVICES.items()},
}
LONG_S = 60.0  # every stage timeout: a round that waited for its deadline would take minutes


def _write_federation(root: Path, port: int) -> Path:
    """The cloud's directory: two gateways, one round, one retry, every stage timeout LONG_S."""
    timeouts = "\n".join(f"{stage.value} = {LONG_S}" for stage in DEADLINE_STAGES)
    config = cloud_config(
        fleet=FLEET,
        port=port,
        cloud='rounds = 1\ngateways = ["g1", "g2"]\nmax_retries = 1\nhttp_port = 0',
        # no total_devices: the codec before the smallest-ring defaults (an unbounded cohort's noise fits
        # no ring of 32 bits or less; this test is about closing early, not about the ring)
        extra=f"[cloud.stage_timeouts_s]\n{timeouts}\n[privacy]\nnoise_multiplier = 1.0\n"
        "[codec]\nquant_bits = 8\nring_bits = 32\n",
    )
    initial = np.zeros(DIM, np.float32)
    path, _keys = write_cloud_dir(root, fleet=FLEET, roles=ROLES, initial=initial, config=config)
    return path


def _run_cloud(port: int, tmp_path: Path, answer: object) -> tuple[int, float, dict]:
    """Run the cloud against `answer(conn, task, ids)` called for each task; (rc, seconds, rounds.json)."""
    args = argparse.Namespace(config=_write_federation(tmp_path, port))
    result: dict[str, int] = {}
    cloud = threading.Thread(target=lambda: result.update(rc=cloud_cli.run(args)))
    conn, inbox = connect(port, "script", [f"fl/v1/{FLEET}/round/+/task"])
    keys = public_keys(ROLES)
    ids = {name: identity(name, keys, fleet=FLEET, clock_ms=wall_clock_ms) for name in ROLES}
    started = time.monotonic()
    try:
        cloud.start()
        while cloud.is_alive() and time.monotonic() - started < 30:
            try:
                _topic, payload = inbox.get(timeout=0.1)
            except Exception:  # noqa: BLE001 - queue.Empty
                continue
            if payload:
                _h, task = ids["g1"].decode(payload, RoundTask, senders={"cloud"})
                answer(conn, task, ids)  # type: ignore[operator]
        cloud.join(timeout=5)
        assert not cloud.is_alive(), "the cloud waited for its deadlines"
    finally:
        conn.stop()
    report = json.loads((tmp_path / "store" / "rounds.json").read_text())
    return result["rc"], time.monotonic() - started, report


def test_gateway_aborts_close_the_round_at_once(
    mosquitto: MosquittoHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def answer(conn: object, task: RoundTask, ids: dict[str, NodeIdentity]) -> None:
        r = task.round_id
        if r == 1:  # g1 sends a partial, g2 aborts: the round closes with g1's partial
            vec = np.ones(DIM)
            partial = PartialAggregate("g1", r, task.model_version, vec, 2, 2.0, ("dev1", "x"))
            conn.publish(partial_topic(FLEET, r, "g1"), ids["g1"].encode(partial, round_id=r))  # type: ignore[attr-defined]
            abort = Abort(round_id=r, sender="g2", reason="cohort of 1 below the minimum of 2")
            conn.publish(abort_topic(FLEET, r, "g2"), ids["g2"].encode(abort, round_id=r))  # type: ignore[attr-defined]

    caplog.set_level(logging.INFO)
    rc, seconds, report = _run_cloud(mosquitto.port, tmp_path, answer)
    assert rc == 0 and seconds < 20  # the partial deadline alone is 6 × 60 s away
    assert [(r["round"], r["state"]) for r in report["rounds"]] == [(1, "completed")]
    assert "gateway g2 aborted: cohort of 1 below the minimum of 2" in caplog.text


def test_every_device_sitting_out_fails_the_round_at_once(
    mosquitto: MosquittoHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def answer(conn: object, task: RoundTask, ids: dict[str, NodeIdentity]) -> None:
        reason = "no local records of tier 'personal' (3 record(s) of other tiers)"
        for dev in DEVICES:
            status = Status(dev, "skipped", reason, int(time.time() * 1000), {"round": task.round_id})
            frame = ids[dev].encode(status, round_id=task.round_id)
            conn.publish(status_topic(FLEET, dev), frame, retain=True)  # type: ignore[attr-defined]

    caplog.set_level(logging.INFO)
    rc, seconds, report = _run_cloud(mosquitto.port, tmp_path, answer)
    assert rc == 1 and seconds < 20  # gave up after max_retries, without waiting for any deadline
    assert [(r["round"], r["state"]) for r in report["rounds"]] == [(1, "failed"), (2, "failed")]
    assert "every device (2) sits out: 2 × no local records of tier 'personal'" in caplog.text
