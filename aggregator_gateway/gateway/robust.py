"""Robust statistics over a stack of update vectors, shared by the gateway (groups) and the cloud (gateways).

Every function takes `vectors` shaped [n, d] (one row per group, gateway or device) and is pure: no state,
no randomness, no logging of the vectors themselves. They defend the mean against a minority of poisoned
rows (docs/robustness.md):

- `trimmed_mean`: per coordinate, drop the `floor(trim_fraction * n)` smallest and largest values, average
  the rest (Yin et al. 2018, "Byzantine-robust distributed learning").
- `coordinate_median`: per-coordinate median (same paper).
- `norm_filter`: keep rows whose L2 norm is at most `max_ratio` × the median norm; a mask, so the caller
  can report what was dropped and choose how to combine what is left.
- `krum`: the row whose summed squared distance to its n − f − 2 nearest rows is smallest
  (Blanchard et al. 2017); needs n ≥ 2f + 3.

`robust_mean` dispatches on a rule name so a config can pick one.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np

RULES: Final = ("none", "trimmed_mean", "median", "norm_filter", "krum")


def _check(vectors: np.ndarray) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"expected a non-empty [n, d] array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("vectors contain non-finite values")
    return array


def trimmed_mean(vectors: np.ndarray, *, trim_fraction: float) -> np.ndarray:
    """Coordinate-wise mean after dropping the floor(trim_fraction·n) lowest and highest values.

    `trim_fraction` in [0, 0.5); at least one value per coordinate must remain.
    """
    array = _check(vectors)
    if not 0.0 <= trim_fraction < 0.5:
        raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
    n = array.shape[0]
    cut = math.floor(trim_fraction * n)
    if n - 2 * cut < 1:
        raise ValueError(f"trim_fraction {trim_fraction} leaves nothing of {n} rows")
    ordered = np.sort(array, axis=0)  # [n, d], each column sorted
    return ordered[cut : n - cut].mean(axis=0)


def coordinate_median(vectors: np.ndarray) -> np.ndarray:
    """Coordinate-wise median (the mean of the two middle values when n is even)."""
    return np.median(_check(vectors), axis=0)


def norm_filter(vectors: np.ndarray, *, max_ratio: float) -> np.ndarray:
    """Boolean mask [n]: True where a row's L2 norm ≤ max_ratio × the median row norm.

    When the median norm is 0 only zero rows are kept. `max_ratio` ≥ 1, so at least half the rows survive.
    """
    array = _check(vectors)
    if not max_ratio >= 1.0:
        raise ValueError(f"max_ratio must be >= 1, got {max_ratio}")
    norms = np.linalg.norm(array, axis=1)
    median_norm = float(np.median(norms))
    if median_norm == 0.0:
        return norms == 0.0
    return norms <= max_ratio * median_norm


def krum(vectors: np.ndarray, *, num_byzantine: int) -> int:
    """Index of the Krum choice: smallest sum of squared distances to its n − f − 2 nearest other rows."""
    array = _check(vectors)
    n = array.shape[0]
    if num_byzantine < 0 or n < 2 * num_byzantine + 3:
        raise ValueError(f"krum needs n >= 2f + 3 rows, got n={n}, f={num_byzantine}")
    squared_norms = np.einsum("ij,ij->i", array, array)
    distances = squared_norms[:, None] + squared_norms[None, :] - 2.0 * array @ array.T  # [n, n]
    np.maximum(distances, 0.0, out=distances)
    np.fill_diagonal(distances, np.inf)
    neighbours = n - num_byzantine - 2
    nearest = np.sort(distances, axis=1)[:, :neighbours]
    scores = nearest.sum(axis=1)
    return int(np.argmin(scores))


def robust_mean(
    vectors: np.ndarray,
    *,
    rule: str,
    trim_fraction: float = 0.2,
    max_norm_ratio: float = 3.0,
    num_byzantine: int = 1,
) -> np.ndarray:
    """Combine rows with the named rule: "none" (plain mean), "trimmed_mean", "median",
    "norm_filter" (mean of the rows kept by `norm_filter`) or "krum" (the chosen row)."""
    array = _check(vectors)
    if rule == "none":
        return array.mean(axis=0)
    if rule == "trimmed_mean":
        return trimmed_mean(array, trim_fraction=trim_fraction)
    if rule == "median":
        return coordinate_median(array)
    if rule == "norm_filter":
        return array[norm_filter(array, max_ratio=max_norm_ratio)].mean(axis=0)
    if rule == "krum":
        return array[krum(array, num_byzantine=num_byzantine)].copy()
    raise ValueError(f"unknown robust rule {rule!r}; expected one of {', '.join(RULES)}")
