"""The network and device model of `fedlora simulate`: device profiles, named fleet mixes, round timing.

A device profile fixes uplink and downlink bandwidth (bit/s), round-trip latency (s), compute speed
relative to the reference device (a factor on the measured seconds of a local step: 2.0 = half as fast)
and availability (probability of being online when a round starts). A fleet mix is a weighted list of
profiles; each device draws one profile per simulation from the mix with the simulation's seed.
Values and their sources are in docs/simulate.md.

A device's modelled time in a round (`device_round_s`):

    protocol_round_trips · rtt + control_bytes / uplink          (SecAgg+ stages: keys, shares, ...)
  + model_bytes / downlink + rtt                                  (the global vector, zstd)
  + local_steps · step_s · compute_factor                         (training)
  + payload_bytes / uplink + rtt / 2                              (the masked update frame)

The round ends when the slowest surviving device is done (or at the deadline, for the devices that
miss it: they drop). Links are modelled as independent; a gateway's own link is not the bottleneck.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MBIT = 1e6


@dataclass(frozen=True)
class DeviceProfile:
    """One kind of device on one kind of link."""

    name: str
    uplink_bps: float
    downlink_bps: float
    rtt_s: float
    compute_factor: float
    availability: float


@dataclass(frozen=True)
class FleetMix:
    """Named mix of profiles with their shares of the fleet (shares sum to 1)."""

    name: str
    profiles: tuple[tuple[float, DeviceProfile], ...]

    def draw(self, count: int, rng: np.random.Generator) -> list[DeviceProfile]:
        """`count` profiles drawn independently with the mix's shares."""
        shares = np.array([share for share, _ in self.profiles], dtype=np.float64)
        picks = rng.choice(len(self.profiles), size=count, p=shares / shares.sum())
        return [self.profiles[int(i)][1] for i in picks]


LTE_M = DeviceProfile("lte-m", 1.0 * MBIT, 1.0 * MBIT, 0.15, 1.0, 0.95)
LTE_M_SLOW = DeviceProfile("lte-m-straggler", 0.25 * MBIT, 0.5 * MBIT, 0.5, 3.0, 0.8)
LTE = DeviceProfile("lte", 10.0 * MBIT, 30.0 * MBIT, 0.05, 1.0, 0.95)
LTE_SLOW = DeviceProfile("lte-straggler", 2.0 * MBIT, 5.0 * MBIT, 0.15, 3.0, 0.8)
WIFI = DeviceProfile("wifi", 50.0 * MBIT, 100.0 * MBIT, 0.02, 1.0, 0.98)
WIFI_SLOW = DeviceProfile("wifi-straggler", 10.0 * MBIT, 20.0 * MBIT, 0.05, 3.0, 0.9)
IDEAL = DeviceProfile("ideal", float("inf"), float("inf"), 0.0, 1.0, 1.0)

FLEET_MIXES: dict[str, FleetMix] = {
    mix.name: mix
    for mix in (
        FleetMix("lte-m", ((0.9, LTE_M), (0.1, LTE_M_SLOW))),
        FleetMix("lte", ((0.9, LTE), (0.1, LTE_SLOW))),
        FleetMix("wifi", ((0.9, WIFI), (0.1, WIFI_SLOW))),
        FleetMix("mixed", ((0.3, LTE_M), (0.4, LTE), (0.2, WIFI), (0.1, LTE_M_SLOW))),
        FleetMix("ideal", ((1.0, IDEAL),)),
    )
}

SECAGG_ROUND_TRIPS = 5  # advertise→roster, shares→routed, masked→survivors, signature→request, shares
DENSE_ROUND_TRIPS = 1  # fit instruction with the model down, result up


@dataclass(frozen=True)
class RoundTraffic:
    """Bytes one device moves in one round besides its update frame, and its protocol round trips."""

    model_bytes: int  # downlink: the global vector as it travels (zstd)
    control_bytes: int  # uplink: SecAgg+ key/share/signature/unmask frames (0 for the dense baseline)
    round_trips: int


@dataclass(frozen=True)
class DeviceTime:
    """Modelled seconds of one device's round, by part."""

    protocol_s: float
    download_s: float
    compute_s: float
    upload_s: float

    @property
    def total_s(self) -> float:
        """Sum of the parts (the parts happen one after another)."""
        return self.protocol_s + self.download_s + self.compute_s + self.upload_s


def _transfer_s(num_bytes: int, bps: float) -> float:
    return 0.0 if num_bytes == 0 or bps == float("inf") else 8.0 * num_bytes / bps


def device_round_s(
    profile: DeviceProfile, *, traffic: RoundTraffic, payload_bytes: int, steps: int, step_s: float
) -> DeviceTime:
    """A device's modelled round time (see the module docstring); bytes are measured frame sizes."""
    return DeviceTime(
        protocol_s=traffic.round_trips * profile.rtt_s
        + _transfer_s(traffic.control_bytes, profile.uplink_bps),
        download_s=_transfer_s(traffic.model_bytes, profile.downlink_bps) + profile.rtt_s,
        compute_s=steps * step_s * profile.compute_factor,
        upload_s=_transfer_s(payload_bytes, profile.uplink_bps) + profile.rtt_s / 2.0,
    )


def compute_only_s(*, steps: int, step_s: float, profile: DeviceProfile) -> float:
    """The same device with infinite bandwidth and zero latency: only its local steps count."""
    return steps * step_s * profile.compute_factor
