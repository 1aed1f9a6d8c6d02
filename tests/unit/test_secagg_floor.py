"""The survivor floor (issue 11, finding 2): no sum of fewer than the task's dp.min_survivors devices is
released, by the gateway (per group), whatever its own settings say, and devices refuse to sign or to
unmask a smaller survivor set, so a dishonest gateway cannot go under the floor either."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aggregator_gateway.gateway.rounds import GroupPolicy, RoundDriver
from edge_runtime.agent.round import DeviceRound, Finished
from edge_runtime.agent.state import Phase
from fl_protocol.errors import ProtocolError
from fl_protocol.secagg import Abort, Survivors, UnmaskRequest
from fl_protocol.secagg.simulate import Simulation
from fl_protocol.topics import (
    Stage,
    abort_topic,
    device_stage_topic,
    gateway_stage_topic,
    parse_topic,
)
from fl_protocol.wire.messages import RoundTask
from fl_protocol.wire.task_settings import DpSettings, SecAggSettings
from tests.kit.fleet import CLOUD, FLEET, GATEWAY, ManualClock, identity, public_keys
from tests.kit.gateway import make_gateway, send_task
from tests.kit.secagg_round import deliver, device_update, make_client, run_in_memory
from tests.kit.tasks import codec_settings, round_task, staggered_deadlines_ms


def _task(
    *, min_survivors: int, min_cohort: int, threshold_fraction: float = 0.5, degree: int = 0
) -> RoundTask:
    """Round 1 with Gaussian noise whose floor is `min_survivors`, on a `degree`-regular graph (0: the
    gateway picks)."""
    ring_bits = codec_settings().ring_bits
    return round_task(
        1,
        min_cohort=min_cohort,
        dp=DpSettings(
            mechanism="gaussian",
            noise_multiplier=1.0,
            clip_norm=1.0,
            min_survivors=min_survivors,
            target_delta=1e-5,
        ),
        secagg=SecAggSettings(
            threshold_fraction=threshold_fraction, neighbour_degree=degree, ring_bits=ring_bits
        ),
    )


def _fleet(task: RoundTask, n: int, *, min_cohort: int, policy: GroupPolicy | None = None):  # type: ignore[no-untyped-def]
    names = [f"dev-{i:02d}" for i in range(n)]
    keys = public_keys(names)
    driver = RoundDriver(
        GATEWAY, FLEET, task, b"\x07" * 32, frozenset(names), keys.get, min_cohort, policy or GroupPolicy()
    )
    clients = {name: make_client(name, task, keys) for name in names}
    updates = {name: device_update(name, task) for name in names}
    return driver, clients, updates


def test_issue_reproduction_fourteen_of_twenty_is_not_released() -> None:
    # min_survivors 20, min_cohort 20, complete graph with t = 11 of 20, 6 of 20 drop before masking:
    # every secret still has 14 >= t holders, so before the floor the gateway released a sum of 14
    task = _task(min_survivors=20, min_cohort=20, degree=19)
    driver, clients, updates = _fleet(task, 20, min_cohort=20)
    run_in_memory(driver, clients, updates, drop_before={f"dev-{i:02d}" for i in range(6)})
    assert driver.result is None
    assert driver.aborted is not None and "min_survivors=20" in driver.aborted.reason


def test_every_survivor_count_below_the_floor_aborts_and_the_floor_itself_releases() -> None:
    task = _task(min_survivors=6, min_cohort=8)
    for dropped, released in ((0, True), (2, True), (3, False)):
        driver, clients, updates = _fleet(task, 8, min_cohort=8)
        run_in_memory(driver, clients, updates, drop_before={f"dev-{i:02d}" for i in range(dropped)})
        assert (driver.result is not None) is released, dropped
        if driver.result is not None:
            assert driver.result.count == 8 - dropped >= 6


def test_a_gateway_min_cohort_below_the_task_is_raised_to_the_task() -> None:
    task = _task(min_survivors=6, min_cohort=6)
    driver, clients, updates = _fleet(task, 5, min_cohort=2)  # the gateway asks for less
    assert driver.min_cohort == 6
    run_in_memory(driver, clients, updates)
    assert driver.result is None and driver.aborted is not None
    assert "below the minimum of 6" in driver.aborted.reason


def test_groups_each_reach_the_floor_and_a_group_under_it_is_left_out() -> None:
    task = _task(min_survivors=5, min_cohort=5)
    policy = GroupPolicy(group_count=4, min_group_size=3)
    driver, clients, updates = _fleet(task, 12, min_cohort=5, policy=policy)
    for client in clients.values():
        driver.accept(Stage.ADVERTISE, client.advertise())
    outgoing = driver.close()
    assert [len(g.members) for g in driver.groups] == [6, 6]  # not 4 groups of 3: each holds 5+
    drop = set(driver.groups[0].members[:2])  # group 0 falls to 4 survivors
    while True:
        deliver(driver, outgoing, clients, updates, drop_before=drop, drop_after=set())
        if driver.finished:
            break
        outgoing = driver.close()
    assert driver.result is not None
    assert driver.result.group_sizes == (6,)
    assert set(driver.result.survivors) == set(driver.groups[1].members)


def test_gateway_setting_cannot_lower_the_task_floor(tmp_path: Path) -> None:
    devices = ["d0", "d1", "d2"]
    keys = public_keys([CLOUD, GATEWAY, *devices])
    sent: list[tuple[str, bytes]] = []
    clock = ManualClock()
    gateway = make_gateway(
        tmp_path,
        keys=keys,
        devices=devices,
        clock=clock,
        sent=sent,
        seed_bytes=lambda n: b"\x05" * n,
        min_cohort=2,
    )
    task = round_task(1, deadlines_ms=staggered_deadlines_ms(), min_cohort=3)
    send_task(gateway, task, keys)
    for node in ("d0", "d1"):
        advert = make_client(node, task, keys).advertise()
        advert_frame = identity(node, keys).encode(advert, round_id=1)
        gateway.handle(
            parse_topic(device_stage_topic(FLEET, GATEWAY, 1, Stage.ADVERTISE, node)), advert_frame
        )
    clock.now_ms = task.deadlines_ms["advertise"]
    gateway.tick()
    # The signed Abort goes to the devices (roster topic) and to the cloud (abort topic), nothing else.
    roster_topic = gateway_stage_topic(FLEET, GATEWAY, 1, Stage.ROSTER)
    assert sorted(topic for topic, _ in sent) == sorted([roster_topic, abort_topic(FLEET, 1, GATEWAY)])
    frame = next(payload for topic, payload in sent if topic == roster_topic)
    _h, abort = gateway.identity.decode(frame, Abort, senders={GATEWAY})
    assert "below the minimum of 3" in abort.reason


def test_clients_refuse_a_dishonest_gateway_below_the_floor() -> None:
    sim = Simulation(n=8, dimension=8, ring_bits=16, seed=b"floor", min_survivors=6)
    sim.server.min_survivors = 1  # a gateway that ignores the floor
    inputs = {node: np.arange(8, dtype=np.uint32) for node in sim.node_ids}
    with pytest.raises(ProtocolError, match="min_survivors=6"):
        sim.run(inputs.__getitem__, drop_before_upload=["node-000", "node-001", "node-002"])


def test_device_round_refuses_survivors_and_unmask_requests_below_the_task_floor() -> None:
    task = _task(min_survivors=4, min_cohort=4)
    keys = public_keys(["a", "b", "c"])
    for message in (
        Survivors(1, GATEWAY, ("a", "b", "c")),
        UnmaskRequest(1, GATEWAY, ("a", "b", "c"), (), {}),
    ):
        device = DeviceRound(task, make_client("a", task, keys))  # a client built without the floor
        handler = device.on_survivors if isinstance(message, Survivors) else device.on_unmask_request
        actions = handler(message)  # type: ignore[arg-type]
        assert len(actions) == 1 and isinstance(actions[0], Finished)
        assert actions[0].phase is Phase.WITHDRAWN and "min_survivors=4" in actions[0].reason
    other_group = DeviceRound(task, make_client("z", task, public_keys(["z"])))
    assert other_group.on_survivors(Survivors(1, GATEWAY, ("a", "b", "c"))) == []  # not ours: ignored
