"""RoundDriver with real SecAggServer and SecAggClient objects, no broker: exact sums under dropouts,
aborts below the threshold, and groups combined exactly or robustly."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import pytest

from aggregator_gateway.gateway.lifecycle import CohortState, collecting
from aggregator_gateway.gateway.rounds import GroupPolicy, Outgoing, RoundDriver, split_groups
from fl_protocol.codec.quantize import from_ring, to_ring
from fl_protocol.secagg import Abort
from fl_protocol.stages import SECURE_ROUND_STAGES, Stage
from fl_protocol.wire.messages import PlainUpdate
from tests.kit.fleet import FLEET, GATEWAY, public_keys
from tests.kit.secagg_round import device_update, make_client, plain_sum, run_in_memory
from tests.kit.tasks import round_task


def _setup(
    n: int, *, policy: GroupPolicy | None = None, min_cohort: int = 3, scale: dict[str, float] | None = None
):
    names = [f"dev-{i:02d}" for i in range(n)]
    keys = public_keys(names)
    task = round_task(1)
    driver = RoundDriver(
        GATEWAY, FLEET, task, b"\x07" * 32, frozenset(names), keys.get, min_cohort, policy or GroupPolicy()
    )
    clients = {name: make_client(name, task, keys) for name in names}
    updates = {name: device_update(name, task, scale=(scale or {}).get(name, 1.0)) for name in names}
    return task, driver, clients, updates


def test_exact_sum_with_dropouts_before_and_after_upload() -> None:
    task, driver, clients, updates = _setup(7)
    run_in_memory(driver, clients, updates, drop_before={"dev-01"}, drop_after={"dev-04"})
    assert driver.aborted is None and driver.result is not None
    survivors = sorted(set(updates) - {"dev-01"})
    ring, decoded = plain_sum(task, [updates[s] for s in survivors])
    assert driver.result.survivors == tuple(survivors)
    assert driver.result.count == 6
    assert np.array_equal(driver.result.ring_sum, ring)
    assert np.allclose(driver.result.vector_sum, decoded, rtol=0, atol=1e-12)


def test_below_threshold_aborts_without_result() -> None:
    _task, driver, clients, updates = _setup(5)
    run_in_memory(driver, clients, updates, drop_before={"dev-00", "dev-01", "dev-02"})
    assert isinstance(driver.aborted, Abort)
    assert driver.result is None


def test_cohort_below_min_cohort_aborts_at_advertise() -> None:
    _task, driver, clients, updates = _setup(3, min_cohort=4)
    run_in_memory(driver, clients, updates)
    assert driver.aborted is not None and "below the minimum" in driver.aborted.reason
    assert driver.result is None


def _closing_states(
    monkeypatch: pytest.MonkeyPatch, driver: RoundDriver, run: Callable[[], None]
) -> list[CohortState]:
    """The round's state before its first close and after each close while `run()` drives it."""
    states, close = [driver.state], driver.close

    def recording_close() -> list[Outgoing]:
        out = close()
        states.append(driver.state)
        return out

    monkeypatch.setattr(driver, "close", recording_close)
    run()
    return states


def test_a_round_walks_the_secure_cohort_table_and_ends_done_or_aborted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _task, driver, clients, updates = _setup(5)
    states = _closing_states(monkeypatch, driver, partial(run_in_memory, driver, clients, updates))
    assert states == [*(collecting(s) for s in SECURE_ROUND_STAGES), CohortState.DONE]
    assert driver.finished and driver.stage is None and driver.result is not None
    _task, driver, clients, updates = _setup(5)
    dropped = {"dev-00", "dev-01", "dev-02"}  # 2 survivors, t = 3
    states = _closing_states(
        monkeypatch, driver, partial(run_in_memory, driver, clients, updates, drop_before=dropped)
    )
    assert states[-2:] == [CohortState.MASKED, CohortState.ABORTED] and driver.aborted is not None
    assert driver.close() == [] and driver.state is CohortState.ABORTED  # an ended round closes nothing


def test_a_secure_round_ignores_plain_updates(caplog: pytest.LogCaptureFixture) -> None:
    task, driver, _clients, _updates = _setup(3)
    update = PlainUpdate(1, "dev-00", task.codec.ring_bits, np.zeros(driver.dimension_k, dtype=np.uint32))
    with caplog.at_level("INFO"):
        assert not driver.accept(Stage.MASKED, update)
    assert "ignored a plain update from dev-00: secure round" in caplog.text


def test_ready_when_every_expected_device_advertised() -> None:
    _task, driver, clients, _updates = _setup(3)
    from fl_protocol.topics import Stage

    for name in ("dev-00", "dev-01"):
        driver.accept(Stage.ADVERTISE, clients[name].advertise())
    assert not driver.ready()
    driver.accept(Stage.ADVERTISE, clients["dev-02"].advertise())
    assert driver.ready()
    assert not driver.accept(Stage.ADVERTISE, clients["dev-02"].advertise())  # duplicate


def test_groups_are_deterministic_and_large_enough() -> None:
    names = [f"d{i}" for i in range(11)]
    policy = GroupPolicy(group_count=4, min_group_size=3)
    groups = split_groups(names, graph_seed=b"\x01" * 32, policy=policy)
    assert groups == split_groups(list(reversed(names)), graph_seed=b"\x01" * 32, policy=policy)
    assert len(groups) == 3 and all(len(g) >= 3 for g in groups)
    assert sorted(n for g in groups for n in g) == sorted(names)


def test_group_sums_add_up_to_the_plain_sum_with_rule_none() -> None:
    task, driver, clients, updates = _setup(9, policy=GroupPolicy(group_count=3, min_group_size=3))
    run_in_memory(driver, clients, updates, drop_after={"dev-03"})
    assert driver.result is not None and len(driver.result.group_sizes) == 3
    ring, decoded = plain_sum(task, updates.values())
    assert np.array_equal(driver.result.ring_sum, ring)
    assert np.allclose(driver.result.vector_sum, decoded, atol=1e-9)


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "norm_filter"])
def test_robust_rule_resists_one_scaled_group(rule: str) -> None:
    policy = GroupPolicy(group_count=5, min_group_size=3, rule=rule, trim_fraction=0.2, max_norm_ratio=3.0)
    names = [f"dev-{i:02d}" for i in range(15)]
    groups = split_groups(names, graph_seed=b"\x07" * 32, policy=policy)
    # every member of one group sends its quantized update ×20 (a malicious device skips clipping and the
    # q-bit clamp; the ring still carries it)
    attackers = set(groups[0])
    task, driver, clients, updates = _setup(15, policy=policy)
    for name in attackers:
        updates[name] = to_ring(20 * from_ring(updates[name], task.codec.ring_bits), task.codec.ring_bits)
    run_in_memory(driver, clients, updates)
    assert driver.result is not None
    honest = [updates[n] for n in names if n not in attackers]
    _ring, honest_sum = plain_sum(task, honest)
    honest_mean = honest_sum / len(honest)
    robust_mean = driver.result.vector_sum / driver.result.count
    _ring, everyone_sum = plain_sum(task, updates.values())
    plain_error = np.linalg.norm(everyone_sum / 15 - honest_mean)
    robust_error = np.linalg.norm(robust_mean - honest_mean)
    assert robust_error < 0.5 * plain_error
