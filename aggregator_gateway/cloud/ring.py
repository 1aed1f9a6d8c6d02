"""The ring-width rule: Z_{2^b} must hold a cohort's sum of q-bit values plus its summed DP noise.

Masked values are summed in Z_{2^b} and travel bit-packed at b bits (docs/update-codec.md, "Ring bits"
and "Uplink bytes"), so b is both a correctness bound and the uplink's bits per value. The integer DP
noise is added after the q-bit clamp (so the clamp never eats it) and must not wrap the ring either
(docs/privacy.md §3). `check_ring_holds_noise` checks a given b; `smallest_ring_bits` finds the smallest b
that passes the same check, which is what `[codec] ring_bits = 0` means in the cloud and the simulator.

Only fl_protocol is imported here, so the cloud's config loader, its task builder and `fedlora simulate`
share one copy of the rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fl_protocol.codec.settings import MAX_RING_BITS, MIN_RING_BITS, required_ring_bits
from fl_protocol.dp.rounds import noise_headroom_bits
from fl_protocol.errors import ConfigError


@dataclass(frozen=True)
class RingNeed:
    """What a cohort's noisy sum needs from the ring.

    clients: n, the number of summands the rule assumes (at least min_survivors and 1).
    quant_bits: q of every summand.
    noise_stddev: σ of the summed noise in quantized integer units (0 without DP).
    noise_bits: headroom bits the noise needs (`fl_protocol.dp.rounds.noise_headroom_bits`).
    """

    clients: int
    quant_bits: int
    noise_stddev: float
    noise_bits: int

    @property
    def bits(self) -> int:
        """q + ceil(log2 n) + noise_bits (`fl_protocol.codec.settings.required_ring_bits`)."""
        return required_ring_bits(self.quant_bits, self.clients, self.noise_bits)

    def describe(self) -> str:
        """One line for error messages: the summands, their width and the noise."""
        return (
            f"{self.clients} clients' {self.quant_bits}-bit values plus {self.noise_bits} bits of DP noise "
            f"(summed σ = {self.noise_stddev:.4g} integer units)"
        )


def ring_need(
    *,
    quant_bits: int,
    max_clients: int,
    min_survivors: int,
    noise_multiplier: float,
    clip_norm: float,
    scale: float,
) -> RingNeed:
    """The need of a cohort of at most `max_clients` devices.

    With n ≥ min_survivors shares of variance (z C s)² / min_survivors (z the noise multiplier, C the clip
    norm, s the quantization scale) the summed noise has σ = z C s sqrt(n / min_survivors); the rule uses
    n = max(max_clients, min_survivors, 1). ConfigError if quant_bits < 1 or σ is not finite.
    """
    n = max(max_clients, min_survivors, 1)
    sigma = noise_multiplier * clip_norm * scale * math.sqrt(n / max(min_survivors, 1))
    return RingNeed(n, quant_bits, sigma, noise_headroom_bits(central_stddev=sigma))


def check_ring_holds_noise(
    *,
    quant_bits: int,
    ring_bits: int,
    max_clients: int,
    min_survivors: int,
    noise_multiplier: float,
    clip_norm: float,
    scale: float,
) -> None:
    """ConfigError unless Z_{2^ring_bits} holds `max_clients` q-bit values plus the summed noise
    (`ring_need` for the bound and its parameters)."""
    need = ring_need(
        quant_bits=quant_bits,
        max_clients=max_clients,
        min_survivors=min_survivors,
        noise_multiplier=noise_multiplier,
        clip_norm=clip_norm,
        scale=scale,
    )
    if ring_bits < need.bits:
        raise ConfigError(
            f"[codec].ring_bits={ring_bits} < {need.bits} needed for {need.describe()}: raise ring_bits, "
            "lower quant_bits or lower total_devices"
        )


def smallest_ring_bits(
    *,
    quant_bits: int,
    max_clients: int,
    min_survivors: int,
    noise_multiplier: float,
    clip_norm: float,
    scale: float,
    remedy: str = "lower quant_bits or the noise",
) -> int:
    """The smallest ring width b in [max(8, q), 32] that `check_ring_holds_noise` accepts for these
    settings: max(MIN_RING_BITS, `ring_need(...)`.bits). Without noise that is max(8, q + ceil(log2 n)).

    The smallest ring sends the fewest bytes: masked values travel bit-packed at b bits. Raises a one-line
    ConfigError naming the settings, ending with `remedy`, when even 32 bits are too few.
    """
    need = ring_need(
        quant_bits=quant_bits,
        max_clients=max_clients,
        min_survivors=min_survivors,
        noise_multiplier=noise_multiplier,
        clip_norm=clip_norm,
        scale=scale,
    )
    if need.bits > MAX_RING_BITS:
        raise ConfigError(
            f"no ring of at most {MAX_RING_BITS} bits holds {need.describe()}, noise multiplier "
            f"{noise_multiplier:g}: {need.bits} bits needed; {remedy}"
        )
    return max(MIN_RING_BITS, need.bits)
