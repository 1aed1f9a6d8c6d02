"""The simulated downlink: the global version each round publishes, and what each device downloads.

The next global version comes from the cloud's own `ServerDownlink` (aggregator_gateway/cloud/downlink.py:
the quantized delta's float32 reconstruction plus server-side error feedback), so the simulated global
follows a real cloud's arithmetic exactly. Downloads are measured signed frames (docs/simulate.md):

- with `[simulate] downlink_bits` 2..8, a device that held the previous version downloads the
  `GlobalModelDelta` frame; one that cannot have it downloads the full `GlobalModel` frame: every device
  in round 1, and a device that was offline in the previous round or vanished in it (dropout). A round
  without any partial publishes no new version: the devices that got it then download nothing next round;
- with `downlink_bits = 0` every online device downloads the full frame every round (the cloud's
  "full models only");
- the dense_fp32 baseline downloads 4·d bytes per device and round (Flower sends raw float32).
"""

from __future__ import annotations

from collections.abc import Set

import numpy as np

from aggregator_gateway.cloud.downlink import ServerDownlink
from fl_protocol.wire.envelope import WireMessage, encode_message
from fl_protocol.wire.messages import GlobalModel, GlobalModelDelta


def cloud_frame_bytes(message: WireMessage) -> int:
    """Measured size of `message` framed and signed by the simulated cloud (fixed clock and key)."""
    from fedlora.simulate.cohort_run import CREATED_MS, FLEET, identity_key

    frame = encode_message(
        message,
        fleet=FLEET,
        round_id=0,
        sender="cloud",
        created_ms=CREATED_MS,
        signing_key=identity_key("cloud", 0),
    )
    return len(frame)


def model_frame_bytes(vector: np.ndarray) -> int:
    """Measured size of the signed GlobalModel frame that carries `vector` down (zstd inside)."""
    return cloud_frame_bytes(GlobalModel.from_vector(0, np.asarray(vector, np.float32)))


class SimDownlink:
    """Per round: `begin` (measure the full frame of the round's global), `download_bytes` per device,
    then `publish` (the next global and its delta). `dense_bytes` > 0 is the dense_fp32 baseline (every
    device downloads that many bytes; `bits` must be 0)."""

    def __init__(self, bits: int, *, dense_bytes: int = 0) -> None:
        if dense_bytes and bits:
            raise ValueError("the dense_fp32 baseline sends float32 models: downlink bits must be 0")
        self.bits, self.dense_bytes = bits, dense_bytes
        self.server = ServerDownlink(bits)
        self.full_bytes = dense_bytes
        self.delta_bytes = 0  # frame of the current global as a delta from the one before (0: none)
        self.holders: frozenset[int] = frozenset()  # devices holding the version before the current one
        self.published: GlobalModelDelta | None = None  # the delta `publish` made last (None: none)

    def begin(self, vector: np.ndarray) -> None:
        """The round's global is `vector`: measure its full frame (the baseline's stays 4·d)."""
        if not self.dense_bytes:
            self.full_bytes = model_frame_bytes(vector)

    def download_bytes(self, device: int) -> int:
        """Bytes `device` downloads to get this round's global (module docstring)."""
        return self.delta_bytes if device in self.holders else self.full_bytes

    def publish(
        self,
        base: np.ndarray,
        target: np.ndarray | None,
        *,
        round_id: int,
        online: Set[int],
        vanished: Set[int],
    ) -> np.ndarray:
        """The next global after a round from `base`: the cloud's reconstruction of `target` (the server
        optimizer's output; None: no partial, no new version). Sets the next round's delta and holders."""
        kept = frozenset(online) - frozenset(vanished)
        self.published = None
        if target is None:  # the same version again: whoever got it this round still holds it
            self.delta_bytes = 0
            self.holders = kept if self.bits else frozenset()
            return np.asarray(base, np.float32)
        step = self.server.step(base, target)
        self.server.adopt(step)
        message = self.published = step.message(model_version=round_id, base_version=round_id - 1)
        self.delta_bytes = 0 if message is None else cloud_frame_bytes(message)
        self.holders = kept if message is not None else frozenset()
        return step.vector
