"""Robust statistics: each rule resists the attack it is meant for and matches the plain mean otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator_gateway.gateway import robust


def _honest(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 1.0 + 0.1 * rng.standard_normal((n, d))


def test_trimmed_mean_ignores_outliers() -> None:
    vectors = _honest(10, 32)
    poisoned = vectors.copy()
    poisoned[0] = 1e6
    poisoned[1] = -1e6
    result = robust.trimmed_mean(poisoned, trim_fraction=0.2)
    assert np.max(np.abs(result - vectors[2:].mean(axis=0))) < 0.2
    assert np.allclose(robust.trimmed_mean(vectors, trim_fraction=0.0), vectors.mean(axis=0))


def test_trimmed_mean_rejects_bad_fraction() -> None:
    with pytest.raises(ValueError, match=r"trim_fraction must be in \[0, 0\.5\)"):
        robust.trimmed_mean(_honest(4, 3), trim_fraction=0.5)


def test_coordinate_median() -> None:
    vectors = np.array([[1.0, 5.0], [2.0, -100.0], [1e9, 6.0]])
    assert np.array_equal(robust.coordinate_median(vectors), [2.0, 5.0])


def test_norm_filter_drops_scaled_vectors() -> None:
    vectors = _honest(8, 16)
    vectors[3] *= 20.0
    vectors[6] *= 20.0
    mask = robust.norm_filter(vectors, max_ratio=3.0)
    assert mask.tolist() == [True, True, True, False, True, True, False, True]
    mean = robust.robust_mean(vectors, rule="norm_filter", max_norm_ratio=3.0)
    assert np.allclose(mean, vectors[mask].mean(axis=0))


def test_norm_filter_all_zero_keeps_all() -> None:
    assert robust.norm_filter(np.zeros((3, 4)), max_ratio=2.0).all()


def test_krum_picks_an_honest_vector() -> None:
    vectors = _honest(7, 20)
    vectors[0] = 50.0
    vectors[4] = -30.0
    index = robust.krum(vectors, num_byzantine=2)
    assert index not in (0, 4)


def test_krum_needs_enough_rows() -> None:
    with pytest.raises(ValueError, match=r"krum needs n >= 2f \+ 3 rows"):
        robust.krum(_honest(4, 3), num_byzantine=1)


@pytest.mark.parametrize("rule", robust.RULES)
def test_every_rule_equals_the_value_of_identical_rows(rule: str) -> None:
    vectors = np.tile(np.arange(5.0), (5, 1))
    assert np.allclose(robust.robust_mean(vectors, rule=rule, num_byzantine=1), np.arange(5.0))


def test_rejects_non_finite_and_unknown_rule() -> None:
    with pytest.raises(ValueError, match="vectors contain non-finite values"):
        robust.coordinate_median(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="unknown robust rule 'mode'; expected one of none,"):
        robust.robust_mean(np.ones((2, 2)), rule="mode")
