"""Fairness / adaptive weights inside the secure sum: devices send (w·Δ, w); the gateway learns only Σ w.

Real RoundDriver + SecAggServer/SecAggClient (no broker), the device-side weight rule, and the cloud's
division by Σ w.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from aggregator_gateway.cloud.combine import weighted_mean
from aggregator_gateway.gateway.rounds import GroupPolicy, RoundDriver
from edge_runtime.agent.worker import MIN_WEIGHT, update_weight
from fl_protocol.codec import decode_weighted_sum, encode_update
from fl_protocol.wire.messages import PartialAggregate
from fl_protocol.wire.task_settings import TrainingSettings
from tests.kit.fleet import FLEET, GATEWAY, public_keys
from tests.kit.secagg_round import make_client, run_in_memory
from tests.kit.tasks import round_task


def _weighted_task() -> object:
    return round_task(
        1,
        training=TrainingSettings(
            local_steps=1,
            batch_size=1,
            learning_rate=1e-3,
            weighting="qffl",
            qffl_q=2.0,
            weight_reference=6.0,
        ),
    )


def test_gateway_learns_the_weight_sum_and_the_weighted_vector_sum() -> None:
    task = _weighted_task()
    names = [f"dev-{i:02d}" for i in range(6)]
    keys = public_keys(names)
    driver = RoundDriver(GATEWAY, FLEET, task, b"\x09" * 32, frozenset(names), keys.get, 3, GroupPolicy())
    clients = {name: make_client(name, task, keys) for name in names}
    rng = np.random.default_rng(1)
    deltas = {n: rng.normal(0, 0.01, task.model_dimension) for n in names}
    weights = {n: w for n, w in zip(names, (1.0, 0.9, 0.5, 0.3, 0.2, 0.05), strict=True)}
    updates = {
        n: encode_update(
            deltas[n], residual=None, settings=task.codec, rng=np.random.default_rng(i), weight=weights[n]
        ).ring_values
        for i, n in enumerate(names)
    }
    run_in_memory(driver, clients, updates, drop_before={"dev-05"})
    result = driver.result
    assert result is not None and result.count == 5
    survivors = [n for n in names if n != "dev-05"]
    max_q = task.codec.max_quantized
    assert result.weight_sum == pytest.approx(sum(weights[n] for n in survivors), abs=5 / max_q)
    expected = sum(weights[n] * deltas[n] for n in survivors)
    np.testing.assert_allclose(result.vector_sum, expected, atol=5 * 2 / task.codec.scale)
    # The unmasked ring sum is exactly the sum of the devices' weighted ring values (weight coordinate last).
    plain = sum(updates[n].astype(np.uint64) for n in survivors) % (1 << task.codec.ring_bits)
    assert np.array_equal(result.ring_sum, plain.astype(np.uint32))
    vec, wsum = decode_weighted_sum(
        result.ring_sum, count=5, settings=task.codec, dimension=task.model_dimension
    )
    assert wsum == pytest.approx(result.weight_sum)


def test_device_weight_rules() -> None:
    qffl = TrainingSettings(
        local_steps=1, batch_size=1, learning_rate=1e-3, weighting="qffl", qffl_q=2.0, weight_reference=6.0
    )
    assert update_weight(qffl, global_loss=3.0, train_rows=10) == pytest.approx(0.25)  # (3/6)^2
    assert update_weight(qffl, global_loss=9.0, train_rows=10) == 1.0  # capped: bounded sensitivity
    assert update_weight(qffl, global_loss=0.0, train_rows=10) == MIN_WEIGHT
    size = TrainingSettings(
        local_steps=1,
        batch_size=1,
        learning_rate=1e-3,
        weighting="datasize",
        qffl_q=1.0,
        weight_reference=200.0,
    )
    assert update_weight(size, global_loss=None, train_rows=50) == pytest.approx(0.25)
    assert (
        update_weight(
            TrainingSettings(local_steps=1, batch_size=1, learning_rate=1e-3), global_loss=3.0, train_rows=50
        )
        is None
    )


def test_cloud_divides_by_the_weight_sum() -> None:
    partials = [
        PartialAggregate("g1", 1, 0, np.full(4, 3.0), 4, 1.5, ("a", "b", "c", "d")),
        PartialAggregate("g2", 1, 0, np.full(4, 1.0), 2, 0.5, ("e", "f")),
    ]
    np.testing.assert_allclose(weighted_mean(partials, weighting="fair"), np.full(4, 2.0))  # 4 / 2.0


def test_tasks_without_weighting_fields_mean_uniform_and_partial_fields_are_refused() -> None:
    from fl_protocol.errors import ConfigError

    old = TrainingSettings.from_fields({"local_steps": 2, "batch_size": 4, "learning_rate": 0.1})
    assert old.weighting == "uniform" and not old.weighted
    fields = TrainingSettings(
        local_steps=2, batch_size=4, learning_rate=0.1, weighting="qffl", qffl_q=1.0, weight_reference=5.0
    ).to_fields()
    assert TrainingSettings.from_fields(fields).weighting == "qffl"
    with pytest.raises(ConfigError, match="training settings: field names differ from the format"):
        TrainingSettings.from_fields({k: v for k, v in fields.items() if k != "qffl_q"})


# -- issue 11, finding 7: the weight coordinate carries no noise, so weighted rounds refuse DP tasks --------


def _weighted_dp_task_fields() -> dict[str, object]:
    task = _weighted_task()
    fields = task.to_fields()  # type: ignore[attr-defined]
    fields["dp"] = {**fields["dp"], "mechanism": "skellam", "noise_multiplier": 1.0}
    return fields


@pytest.mark.parametrize("mechanism", ["skellam", "gaussian"])
@pytest.mark.parametrize("weighting", ["qffl", "datasize"])
def test_a_weighted_task_with_dp_cannot_be_built_or_decoded(mechanism: str, weighting: str) -> None:
    from fl_protocol.errors import ConfigError
    from fl_protocol.wire.messages import RoundTask
    from fl_protocol.wire.task_settings import DpSettings

    task = round_task(1)
    training = TrainingSettings(
        local_steps=1, batch_size=1, learning_rate=1e-3, weighting=weighting, qffl_q=2.0, weight_reference=6.0
    )
    with pytest.raises(ConfigError, match="weighted rounds"):
        dataclasses.replace(
            task,
            training=training,
            dp=DpSettings(
                mechanism=mechanism, noise_multiplier=1.0, clip_norm=1.0, min_survivors=2, target_delta=1e-5
            ),
        )
    fields = _weighted_dp_task_fields()  # what a device or gateway would decode from the wire
    with pytest.raises(ConfigError, match="weighted rounds"):
        RoundTask.from_fields(fields)


def test_the_issue_leak_cannot_happen_under_dp() -> None:
    """Before: two sums differing by one device revealed its weight exactly (round(0.05·127)/127) under a
    DP task. Now no DP weighted task exists, and the device's encoder refuses a weight under DP too."""
    from edge_runtime.agent.encode import encode_for_task
    from fl_protocol.errors import PrivacyError
    from fl_protocol.wire.task_settings import DpSettings

    dp_task = round_task(
        1,
        dp=DpSettings(
            mechanism="skellam", noise_multiplier=1.0, clip_norm=1.0, min_survivors=2, target_delta=1e-5
        ),
    )
    with pytest.raises(PrivacyError, match="weight"):
        encode_for_task(
            np.full(dp_task.model_dimension, 0.01),
            residual=None,
            task=dp_task,
            rounding_rng=np.random.default_rng(0),
            noise_rng=np.random.default_rng(1),
            weight=0.05,
        )


def test_cloud_config_refuses_weighting_with_dp(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from aggregator_gateway.cloud.config import CloudConfig
    from fl_protocol.errors import ConfigError

    base = (
        '[node]\nid = "cloud"\nrole = "cloud"\nfleet = "f1"\n[broker]\nhost = "127.0.0.1"\nport = 1883\n'
        '[identity]\nsigning_key_file = "k"\nfleet_keys_file = "f.json"\n'
        '[cloud]\nbundle_dir = "b"\nrounds = 3\ngateways = ["g1"]\nstore_dir = "s"\n'
        '[training]\nweighting = "qffl"\n[aggregation]\nweighting = "fair"\n'
    )
    path = tmp_path / "cloud.toml"
    path.write_text(base + '[privacy]\nmechanism = "skellam"\nnoise_multiplier = 1.0\n')
    with pytest.raises(ConfigError, match="weighted rounds refuse DP"):
        CloudConfig.load(path)
    path.write_text(base + '[privacy]\nmechanism = "none"\n')
    assert CloudConfig.load(path).training.weighting == "qffl"
