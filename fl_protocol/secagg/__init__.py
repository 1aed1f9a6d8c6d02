"""SecAgg+ secure aggregation (Bell et al. 2020 on Bonawitz et al. 2017 double masking).

Pure state machines for the two roles (`SecAggClient`, `SecAggServer`), their messages, and the
primitives underneath: X25519/HKDF key derivation (`keys`), AES-CTR mask expansion (`prg`), Shamir
sharing (`shamir`) and the k-regular neighbour graph (`graph`). See docs/secure-aggregation.md.
"""

from __future__ import annotations

from fl_protocol.secagg.client import ClientStage, SecAggClient
from fl_protocol.secagg.cohort_view import Cohort
from fl_protocol.secagg.graph import default_degree, neighbour_graph
from fl_protocol.secagg.messages import (
    Abort,
    AdvertiseKeys,
    ConsistencySignature,
    MaskedUpdate,
    Roster,
    RoutedShares,
    ShareKeys,
    Survivors,
    UnmaskRequest,
    UnmaskShares,
)
from fl_protocol.secagg.prg import MaskExpander, expand_mask
from fl_protocol.secagg.server import AggregateResult, SecAggServer, ServerStage

__all__ = [
    "Abort",
    "AdvertiseKeys",
    "AggregateResult",
    "ClientStage",
    "Cohort",
    "ConsistencySignature",
    "MaskExpander",
    "MaskedUpdate",
    "Roster",
    "RoutedShares",
    "SecAggClient",
    "SecAggServer",
    "ServerStage",
    "ShareKeys",
    "Survivors",
    "UnmaskRequest",
    "UnmaskShares",
    "default_degree",
    "expand_mask",
    "neighbour_graph",
]
