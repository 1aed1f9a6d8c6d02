"""Partials of the gateways -> one mean update (docs/round-protocol.md, "The cloud").

Each verified PartialAggregate carries the float64 SUM of its survivors' decoded updates, the survivor
count and the sum of their aggregation weights. Without a robust rule the mean update is exact:

    count weighting:  Δ = Σ_g sum_g / Σ_g count_g
    fair weighting:   Δ = Σ_g sum_g / Σ_g weight_sum_g   (devices sent w·Δ and w inside the secure sum)

With a robust rule each gateway's own mean (sum_g / count_g, or / weight_sum_g) is one row of a [G, d]
stack combined by `aggregator_gateway.gateway.robust.robust_mean`, so a minority of gateways sending
poisoned partials cannot pull the result arbitrarily far (the rules need enough gateways: median and
trimmed mean with G >= 3, krum with G >= 2f + 3).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aggregator_gateway.cloud.config import AggregationSection
from aggregator_gateway.gateway.robust import robust_mean
from fl_protocol.errors import ProtocolError
from fl_protocol.wire.messages import PartialAggregate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Combined:
    """The mean update [d] and the number of devices (survivors) behind it."""

    mean_update: np.ndarray
    survivors: int


def _denominator(partial: PartialAggregate, weighting: str) -> float:
    return float(partial.count) if weighting == "count" else float(partial.weight_sum)


def weighted_mean(partials: Sequence[PartialAggregate], *, weighting: str = "count") -> np.ndarray:
    """Exact mean of every device's update across all partials (see the module docstring)."""
    total = sum(_denominator(p, weighting) for p in partials)
    if not partials or total <= 0:
        raise ProtocolError(f"no partial with a positive {weighting} to average")
    stacked = np.sum([np.asarray(p.vector_sum, np.float64) for p in partials], axis=0)
    return stacked / total


def gateway_means(partials: Sequence[PartialAggregate], *, weighting: str = "count") -> np.ndarray:
    """[G, d]: each gateway's own mean update (partials with a zero denominator are left out)."""
    rows = [
        np.asarray(p.vector_sum, np.float64) / _denominator(p, weighting)
        for p in partials
        if _denominator(p, weighting) > 0
    ]
    if not rows:
        raise ProtocolError(f"no partial with a positive {weighting} to average")
    return np.stack(rows)


def combine(partials: Sequence[PartialAggregate], section: AggregationSection) -> Combined:
    """Mean update of a round's partials under [aggregation] (weighting, optional robust rule)."""
    survivors = sum(p.count for p in partials)
    if section.robust == "none":
        return Combined(weighted_mean(partials, weighting=section.weighting), survivors)
    rows = gateway_means(partials, weighting=section.weighting)
    mean = robust_mean(
        rows,
        rule=section.robust,
        trim_fraction=section.trim_fraction,
        max_norm_ratio=section.max_norm_ratio,
        num_byzantine=section.num_byzantine,
    )
    return Combined(mean, survivors)
