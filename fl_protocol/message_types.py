"""Wire message types. Values are part of the protocol: never renumber, only append."""

from __future__ import annotations

from enum import IntEnum


class MessageType(IntEnum):
    """Type byte of every frame; bound into the signature together with fleet, round and sender."""

    # cloud -> gateways -> devices
    ROUND_TASK = 1
    GLOBAL_MODEL = 2
    GLOBAL_MODEL_DELTA = 3  # a version as a quantized delta from the one before (docs/update-codec.md)
    # SecAgg+ stages (docs/round-protocol.md rows 2-7)
    ADVERTISE_KEYS = 10  # device -> gateway: signed c_pk, s_pk
    ROSTER = 11  # gateway -> devices: cohort, neighbour graph seed, threshold
    SHARE_KEYS = 12  # device -> gateway: encrypted shares addressed to neighbours
    ROUTED_SHARES = 13  # gateway -> one device: the encrypted shares addressed to it
    MASKED_UPDATE = 14  # device -> gateway: masked, packed update
    SURVIVORS = 15  # gateway -> devices: survivor set to sign (consistency round)
    CONSISTENCY_SIGNATURE = 16  # device -> gateway: signature over (round, survivors, model hash)
    UNMASK_REQUEST = 17  # gateway -> devices: signed survivor + dropped sets, collected signatures
    UNMASK_SHARES = 18  # device -> gateway: b-shares of survivors, s_sk-shares of dropped peers
    PLAIN_UPDATE = 19  # device -> trusted gateway: encoded update, not masked (trusted mode)
    # gateway -> cloud
    PARTIAL_AGGREGATE = 30
    # any node
    STATUS = 40
    ABORT = 41
    # transport: one slice of a message larger than the broker's packet limit (fl_protocol.wire.chunks)
    CHUNK = 50
