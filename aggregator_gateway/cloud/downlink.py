"""The cloud's side of the compressed downlink (docs/update-codec.md, "Downlink"): what it publishes as the
next global version, and the server-side error feedback that keeps nothing of the server update lost.

Each committed round, from the published base b (float32) and the server optimizer's target t:

    x  = t + e                  (float64; e: the residual the quantizer left last round, 0 at first)
    Q  = quantize_delta(x − b)  (fl_protocol.codec.downlink: bits per value, one scale per chunk)
    R  = b ⊕ Q                  (the bit-exact float32 reconstruction every device computes)
    e' = x − R                  (float64, kept for the next round)

R, not t, becomes the new version: the version the devices rebuild from the delta is exactly the one the
cloud stores, hashes into the next task and trains from. Since R_n = b_0 + Σ updates + e_0 − e_n, the
published model tracks the exact sum of the server updates up to the last residual, which stays within
half a quantization step per value (plus float32 rounding) instead of accumulating: error feedback
(Seide et al., "1-bit stochastic gradient descent ...", Interspeech 2014), here on the server's side of
the link as in DoubleSqueeze (Tang et al., ICML 2019). `fedlora simulate` runs the same `ServerDownlink`.

With bits = 0 (full models only) R = float32(t) and there is no residual and no delta.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from fl_protocol.codec.compress import vector_sha256
from fl_protocol.codec.downlink import DEFAULT_DOWNLINK_CHUNK, QuantizedDelta, apply_delta, quantize_delta
from fl_protocol.wire.messages import GlobalModelDelta

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class DownlinkStep:
    """One round's outcome: `vector` float32 (d,) to publish as the new version; `quantized` the delta from
    the base to it (None with bits = 0); `residual` float64 (d,) after this round (None with bits = 0)."""

    vector: np.ndarray
    base_sha256: bytes
    quantized: QuantizedDelta | None
    residual: np.ndarray | None

    def message(self, *, model_version: int, base_version: int) -> GlobalModelDelta | None:
        """The `GlobalModelDelta` from `base_version` to `model_version` (None with bits = 0)."""
        if self.quantized is None:
            return None
        return GlobalModelDelta.from_quantized(
            self.quantized,
            model_version=model_version,
            base_version=base_version,
            base_sha256=self.base_sha256,
            model_sha256=vector_sha256(self.vector),
        )


class ServerDownlink:
    """Quantized deltas with server-side error feedback (module docstring).

    bits: 0 (full models only) or 2..8; residual: float64 (d,) restored from the model store, or None for
    zeros. `step` is pure; `adopt` keeps a committed step's residual.
    """

    def __init__(
        self, bits: int, *, chunk: int = DEFAULT_DOWNLINK_CHUNK, residual: np.ndarray | None = None
    ) -> None:
        self.bits, self.chunk = bits, chunk
        self._residual = None if residual is None else np.asarray(residual, np.float64)

    @property
    def residual(self) -> np.ndarray | None:
        """The residual e carried into the next round (None: zeros, or bits = 0)."""
        return self._residual

    def step(self, base: np.ndarray, target: np.ndarray) -> DownlinkStep:
        """The version to publish after `base` (float32 (d,), the published version the round trained
        from) when the server optimizer proposes `target` (d,). ValueError if `target` or the delta is not
        finite, the shapes differ, or a scale overflows float32."""
        b = np.ascontiguousarray(base, dtype=np.float32)
        t = np.asarray(target, dtype=np.float64)
        if t.shape != b.shape or b.ndim != 1:
            raise ValueError("base and target must be vectors of one length")
        if not np.all(np.isfinite(t)):
            raise ValueError("the server's target model is not finite")
        if self.bits == 0:
            return DownlinkStep(t.astype(np.float32), vector_sha256(b), None, None)
        if self._residual is not None and self._residual.shape != b.shape:
            raise ValueError("the stored downlink residual has another length than the model")
        x = t if self._residual is None else t + self._residual
        quantized = quantize_delta(x - b.astype(np.float64), bits=self.bits, chunk=self.chunk)
        vector = apply_delta(b, quantized)
        return DownlinkStep(vector, vector_sha256(b), quantized, x - vector.astype(np.float64))

    def adopt(self, step: DownlinkStep) -> None:
        """Carry `step`'s residual into the next round (after the step's version was committed)."""
        self._residual = step.residual
