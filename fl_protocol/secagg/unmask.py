"""Gateway-side mask removal (Bonawitz et al. 2017 double masking, on the SecAgg+ graph).

sum(y_u for u in S) = sum(x_u) + sum(PRG(b_u) for u in S) + sum over edges (u, d) with u in S, d dropped
of ±PRG(s_ud); pairwise masks between two survivors cancel. So: reconstruct b_u for survivors and s_sk_d
for dropped nodes from t shares each, then subtract the self masks and undo the pairwise masks along the
graph edges from survivors to dropped nodes, in place in one uint32 buffer, and reduce mod 2^b once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from fl_protocol.errors import ProtocolError
from fl_protocol.secagg import keys, shamir
from fl_protocol.secagg.cohort import Cohort
from fl_protocol.secagg.prg import MaskExpander, ring_mask

logger = logging.getLogger(__name__)


def remove_masks(
    masked_sum: np.ndarray,
    *,
    cohort: Cohort,
    fleet: str,
    round_id: int,
    survivors: tuple[str, ...],
    dropped: tuple[str, ...],
    b_points: Mapping[str, Mapping[int, int]],
    s_points: Mapping[str, Mapping[int, int]],
) -> np.ndarray:
    """Return the unmasked sum mod 2^ring_bits; `masked_sum` is consumed (modified in place).

    Raises ProtocolError (and reveals nothing) if any needed secret has fewer than t shares or a
    reconstructed s_sk does not match its advertised public key.
    """
    surviving = set(survivors)
    needed_dropped = [d for d in dropped if cohort.neighbours[d] & surviving]
    b_seeds = {u: _reconstruct(b_points.get(u, {}), cohort.threshold, "b", u) for u in survivors}
    s_keys = {d: _reconstruct(s_points.get(d, {}), cohort.threshold, "s_sk", d) for d in needed_dropped}
    for node, private in s_keys.items():
        if keys.public_from_private(private) != cohort.keys[node].s_public:
            raise ProtocolError(f"reconstructed s_sk of {node} does not match its public key")
    expander = MaskExpander(cohort.dimension)
    for u in survivors:
        expander.add_into(masked_sum, b_seeds[u], subtract=True)
    for d in needed_dropped:
        for u in sorted(cohort.neighbours[d] & surviving):
            seed = keys.derive_pair_seed(
                s_keys[d], cohort.keys[u].s_public, fleet=fleet, round_id=round_id, node_a=d, node_b=u
            )
            # u added +PRG(s_ud) if u < d, else -PRG(s_ud): undo it
            expander.add_into(masked_sum, seed, subtract=u < d)
    np.bitwise_and(masked_sum, ring_mask(cohort.ring_bits), out=masked_sum)
    return masked_sum


def _reconstruct(points: Mapping[int, int], threshold: int, kind: str, owner: str) -> bytes:
    if len(points) < threshold:
        raise ProtocolError(f"only {len(points)} of t={threshold} {kind}-shares for {owner}")
    try:
        return shamir.reconstruct(points, threshold=threshold)
    except ValueError:
        raise ProtocolError(f"{kind}-shares of {owner} are inconsistent") from None
