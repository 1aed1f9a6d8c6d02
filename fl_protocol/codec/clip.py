"""L2 clip of an update to norm C (docs/update-codec.md step 2): what makes the DP sensitivity finite."""

from __future__ import annotations

import numpy as np

from fl_protocol.errors import PrivacyError


def l2_clip(vector: np.ndarray, clip_norm: float) -> tuple[np.ndarray, float]:
    """Return (vector scaled so its L2 norm is at most `clip_norm`, the input's L2 norm), in float64.

    Zero vectors pass unchanged. A vector already within the bound is returned unscaled, so clipping is
    idempotent. Non-finite input raises `PrivacyError` (not ValueError): a NaN/inf update would make the
    clip bound meaningless and silently break the DP guarantee, so it must stop the round for this device.
    """
    if not np.isfinite(clip_norm) or clip_norm <= 0:
        raise ValueError("clip_norm must be finite and > 0")
    x = np.asarray(vector, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise PrivacyError("update contains non-finite values")
    with np.errstate(over="ignore"):
        norm = float(np.linalg.norm(x))
    if not np.isfinite(norm):
        raise PrivacyError("update norm overflows")
    if norm <= clip_norm:
        return x.copy(), norm
    clipped = x * (clip_norm / norm)
    # Rounding can leave the product a hair above C; shrink by one ulp-scale step until the bound holds.
    while float(np.linalg.norm(clipped)) > clip_norm:
        clipped *= 1.0 - 2.0**-52
    return clipped, norm
