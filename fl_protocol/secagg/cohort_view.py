"""The shared view of one cohort that both roles derive from a roster: 1-based indices (Shamir
x-coordinates), the neighbour graph over node ids, and the threshold rules."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fl_protocol.errors import ProtocolError
from fl_protocol.secagg.graph import check_degree, default_degree, neighbour_graph
from fl_protocol.secagg.messages import AdvertiseKeys, Roster
from fl_protocol.secagg.prg import check_ring_bits


def check_threshold(degree: int, threshold: int) -> None:
    """Raise ProtocolError unless (k+1)/2 < t <= k+1: each secret has k+1 holders (the k neighbours and
    the owner); a strict majority means the holders who give a b-share and those who give an s-share of
    one peer always intersect, and an honest holder never gives both."""
    if not (2 * threshold > degree + 1 and threshold <= degree + 1 and threshold >= 2):
        raise ProtocolError(f"threshold {threshold} invalid for degree {degree}: need (k+1)/2 < t <= k+1")


def default_threshold(degree: int, fraction: float = 0.5) -> int:
    """Smallest t with t > fraction·(k+1) (fraction in [0.5, 1)); the default is a strict majority."""
    if not 0.5 <= fraction < 1.0:
        raise ValueError("threshold_fraction must be in [0.5, 1)")
    threshold = min(math.floor(fraction * (degree + 1)) + 1, degree + 1)
    return max(threshold, 2)


@dataclass(frozen=True)
class Cohort:
    """Members in roster order (index = position + 1), neighbour sets by id, and t."""

    members: tuple[str, ...]
    keys: dict[str, AdvertiseKeys]
    index: dict[str, int]
    neighbours: dict[str, frozenset[str]]
    degree: int
    threshold: int
    dimension: int
    ring_bits: int

    @classmethod
    def from_roster(cls, roster: Roster) -> Cohort:
        """Validate a roster's parameters and build the cohort view (ProtocolError if invalid)."""
        members = tuple(m.sender for m in roster.members)
        if len(set(members)) != len(members) or len(members) < 2:
            raise ProtocolError("roster members must be unique and at least 2")
        try:
            check_degree(len(members), roster.degree)
            check_ring_bits(roster.ring_bits)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None
        check_threshold(roster.degree, roster.threshold)
        graph = neighbour_graph(len(members), roster.degree, roster.graph_seed)
        return cls(
            members=members,
            keys={m.sender: m for m in roster.members},
            index={node: i + 1 for i, node in enumerate(members)},
            neighbours={node: frozenset(members[j] for j in graph[i]) for i, node in enumerate(members)},
            degree=roster.degree,
            threshold=roster.threshold,
            dimension=roster.dimension,
            ring_bits=roster.ring_bits,
        )

    def holders(self, node: str) -> frozenset[str]:
        """Nodes holding a share of `node`'s secrets: its neighbours and itself."""
        return self.neighbours[node] | {node}


def recommended_degree(n: int, dropout: float, failure_probability: float = 1e-6) -> int:
    """Smallest valid k (>= the default) such that, with each node dropping independently with
    probability `dropout`, the union bound over all n nodes on "fewer than t of its k neighbours
    remain" stays below `failure_probability` (t = strict majority of k + 1). Falls back to n - 1.

    k ≈ 2·log2(n) suffices for few dropouts; 30% dropout needs a larger k (Bell et al. 2020, §4).
    """
    if not 0.0 <= dropout < 1.0 or not 0.0 < failure_probability < 1.0:
        raise ValueError("need 0 <= dropout < 1 and 0 < failure_probability < 1")
    for k in range(default_degree(n), n):
        if (n * k) % 2:
            continue
        threshold = default_threshold(k)
        # P(Binomial(k, 1 - dropout) < t): too few surviving neighbours to rebuild one node's secret
        tail = sum(
            math.comb(k, j) * (1 - dropout) ** j * dropout ** (k - j) for j in range(min(threshold, k + 1))
        )
        if n * tail <= failure_probability:
            return k
    return n - 1
