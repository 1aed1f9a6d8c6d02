"""Shared random-k sparsification (docs/update-codec.md, step 3).

All devices of a round keep the same index set S, derived from the task's public 32-byte seed, so masked
vectors line up coordinate by coordinate under secure aggregation. S is a uniformly random k-subset of
range(d): every coordinate gets a 64-bit ChaCha20 key and S is the k smallest keys (stable sort breaks the
astronomically unlikely ties by index, so the result is identical on every platform), returned sorted.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from fl_protocol.codec.prg import random_uint64

_INDEX_LABEL = b"fedlora-idx1"


@lru_cache(maxsize=8)
def _cached_index_set(seed: bytes, dimension: int, k: int) -> np.ndarray:
    if k == dimension:
        indices = np.arange(dimension, dtype=np.int64)
    else:
        keys = random_uint64(seed, _INDEX_LABEL, dimension)
        indices = np.sort(np.argsort(keys, kind="stable")[:k]).astype(np.int64)
    indices.flags.writeable = False
    return indices


def index_set(seed: bytes, dimension: int, k: int) -> np.ndarray:
    """Sorted int64 array of the k shared coordinates out of `dimension` (read-only, cached per seed)."""
    if not 1 <= k <= dimension:
        raise ValueError("need 1 <= k <= dimension")
    return _cached_index_set(bytes(seed), int(dimension), int(k))


def gather(vector: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """x_S: the coordinates of `vector` on the index set (a copy)."""
    return np.asarray(vector)[indices].copy()


def scatter(values: np.ndarray, indices: np.ndarray, dimension: int) -> np.ndarray:
    """Inverse of `gather` on S: a float64 vector of length `dimension`, zero off S."""
    if values.shape != indices.shape:
        raise ValueError("values and indices must have the same length")
    out = np.zeros(dimension, dtype=np.float64)
    out[indices] = values
    return out


def off_support(vector: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The error-feedback residual: `vector` with the coordinates of S set to zero (a copy)."""
    residual = np.array(vector, dtype=np.float64, copy=True)
    residual[indices] = 0.0
    return residual
