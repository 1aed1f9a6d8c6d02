"""Gateway-side mask removal (Bonawitz et al. 2017 double masking, on the SecAgg+ graph).

sum(y_u for u in S) = sum(x_u) + sum(PRG(b_u) for u in S) + sum over edges (u, d) with u in S, d dropped
of ±PRG(s_ud); pairwise masks between two survivors cancel. So: reconstruct b_u for survivors and s_sk_d
for dropped nodes from t shares each, then subtract the self masks and undo the pairwise masks along the
graph edges from survivors to dropped nodes, in place in one uint32 buffer, and reduce mod 2^b once.

Reconstruction is verifiable (docs/secure-aggregation.md, "Verifiable unmasking"): a b_u counts only if it
matches the commitment its owner signed into its ShareKeys, an s_sk only if it gives the advertised s_pk.
`shamir.robust_reconstruct` searches t-subsets until that check passes, so wrong shares (crafted or random)
neither corrupt the sum nor abort the cohort while t right shares of every secret remain. Senders of shares
proven wrong are named and their other shares are left out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np

from fl_protocol.errors import ProtocolError
from fl_protocol.secagg import keys, shamir
from fl_protocol.secagg.cohort_view import Cohort
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
    b_commitments: Mapping[str, bytes],
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Return (the unmasked sum mod 2^ring_bits, senders of wrong shares); `masked_sum` is consumed.

    Raises ProtocolError (and reveals nothing) if a needed secret cannot be reconstructed: fewer than t
    shares, or no t of them pass the check (fewer than t right shares, or a false commitment).
    """
    surviving = set(survivors)
    needed_dropped = [d for d in dropped if cohort.neighbours[d] & surviving]
    recovery = _Recovery(cohort, fleet, round_id)
    b_seeds = {
        u: recovery.secret(
            "b", u, b_points.get(u, {}), _commitment_check(b_commitments.get(u), fleet, round_id, u)
        )
        for u in survivors
    }
    s_keys = {
        d: recovery.secret("s_sk", d, s_points.get(d, {}), _public_key_check(cohort.keys[d].s_public))
        for d in needed_dropped
    }
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
    return masked_sum, tuple(sorted(recovery.misbehaving))


class _Recovery:
    """Reconstructs secrets one by one; shares from senders already proven wrong are left out."""

    def __init__(self, cohort: Cohort, fleet: str, round_id: int) -> None:
        self.cohort, self.fleet, self.round_id = cohort, fleet, round_id
        self.misbehaving: set[str] = set()

    def secret(
        self, kind: str, owner: str, points: Mapping[int, int], check: Callable[[bytes], bool]
    ) -> bytes:
        threshold = self.cohort.threshold
        if len(points) < threshold:
            raise ProtocolError(f"only {len(points)} of t={threshold} {kind}-shares for {owner}")
        excluded = {self.cohort.index[node] for node in self.misbehaving}
        trusted = {x: y for x, y in points.items() if x not in excluded}
        candidates = [trusted, dict(points)] if len(trusted) >= threshold and excluded else [dict(points)]
        failure = ""
        for shares in candidates:
            try:
                decoded = shamir.robust_reconstruct(shares, threshold=threshold, check=check)
            except ValueError as exc:
                failure = str(exc)
                continue
            self._blame(kind, owner, decoded)
            return decoded.secret
        raise ProtocolError(f"{kind}-shares of {owner} do not reconstruct a verified secret: {failure}")

    def _blame(self, kind: str, owner: str, decoded: shamir.Decoded) -> None:
        if not decoded.bad_xs:
            return
        senders = sorted(self.cohort.members[x - 1] for x in decoded.bad_xs)
        if not decoded.attributable:
            logger.warning(
                "round %d: %d wrong %s-shares of %s; too many to name their senders",
                self.round_id,
                len(senders),
                kind,
                owner,
            )
            return
        logger.warning(
            "round %d: wrong %s-share(s) of %s from %s: left out",
            self.round_id,
            kind,
            owner,
            ", ".join(senders),
        )
        self.misbehaving.update(senders)


def _commitment_check(
    commitment: bytes | None, fleet: str, round_id: int, owner: str
) -> Callable[[bytes], bool]:
    def check(candidate: bytes) -> bool:
        expected = keys.self_mask_commitment(candidate, fleet=fleet, round_id=round_id, node=owner)
        return commitment is not None and expected == commitment

    return check


def _public_key_check(s_public: bytes) -> Callable[[bytes], bool]:
    def check(candidate: bytes) -> bool:
        return keys.public_from_private(candidate) == s_public

    return check
