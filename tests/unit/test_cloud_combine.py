"""Combining gateway partials: exact weighted mean by count (or weight), robust rules across gateways."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator_gateway.cloud.combine import combine, gateway_means, weighted_mean
from aggregator_gateway.cloud.config import AggregationSection
from fl_protocol.errors import ProtocolError
from fl_protocol.wire.messages import PartialAggregate


def _partial(
    gateway: str, vector_sum: list[float], count: int, weight_sum: float | None = None
) -> PartialAggregate:
    survivors = tuple(f"{gateway}-d{i}" for i in range(count))
    return PartialAggregate(
        gateway,
        1,
        0,
        np.array(vector_sum, np.float64),
        count,
        float(count) if weight_sum is None else weight_sum,
        survivors,
    )


def test_weighted_by_count_is_the_mean_over_devices() -> None:
    partials = [_partial("g1", [3.0, 3.0], 3), _partial("g2", [6.0, 0.0], 1)]
    assert np.allclose(weighted_mean(partials), [9 / 4, 3 / 4])
    combined = combine(partials, AggregationSection())
    assert combined.survivors == 4
    assert np.allclose(combined.mean_update, [9 / 4, 3 / 4])


def test_fair_weighting_divides_by_the_weight_sum() -> None:
    partials = [_partial("g1", [2.0], 3, weight_sum=1.0), _partial("g2", [2.0], 1, weight_sum=3.0)]
    assert np.allclose(combine(partials, AggregationSection(weighting="fair")).mean_update, [1.0])


def test_no_devices_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="no partial with a positive count to average"):
        weighted_mean([_partial("g1", [0.0], 0)])


def test_gateway_means_rows() -> None:
    rows = gateway_means([_partial("g1", [4.0], 2), _partial("g2", [3.0], 3)])
    assert np.allclose(rows, [[2.0], [1.0]])


@pytest.mark.parametrize("rule", ["median", "trimmed_mean"])
def test_robust_rule_resists_one_gateway_sending_20x(rule: str) -> None:
    rng = np.random.default_rng(7)
    honest_mean = rng.normal(size=16)
    partials = []
    for i in range(5):
        mean = honest_mean + 0.01 * rng.normal(size=16)
        factor = 20.0 if i == 0 else 1.0
        partials.append(_partial(f"g{i}", list(4 * mean * factor), 4))
    plain = combine(partials, AggregationSection()).mean_update
    robust = combine(partials, AggregationSection(robust=rule, trim_fraction=0.2)).mean_update
    assert np.linalg.norm(plain - honest_mean) > 2.0 * np.linalg.norm(honest_mean)
    assert np.linalg.norm(robust - honest_mean) < 0.05 * np.linalg.norm(honest_mean)
