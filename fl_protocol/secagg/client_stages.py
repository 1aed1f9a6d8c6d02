"""The SecAgg+ client's stages as a transition table (fl_protocol.state_machine; docs/architecture.md).

A client moves INIT → ADVERTISED → SHARES_SENT → SHARES_RECEIVED → MASKED → SIGNED → UNMASKED, one
event per protocol step, in this order only (docs/secure-aggregation.md). ABORTED is the error state: a
refusal (`SecAggClient._refuse`) enters it and nothing leaves it. UNMASKED is terminal. What the table
does not cover is handled before it by `SecAggClient`: a message of another round or sender, or one that
arrives before its stage, is ignored; a replay of a message already answered returns the cached answer;
neither moves the machine.
"""

from __future__ import annotations

from enum import Enum

from fl_protocol.state_machine import TransitionTable, table


class ClientStage(str, Enum):
    """Client stages, in protocol order (values are the words logs and docs use)."""

    INIT = "init"  # keys generated, nothing sent
    ADVERTISED = "advertised"  # c_pk and s_pk signed and handed out
    SHARES_SENT = "shares_sent"  # roster checked, encrypted shares of b_u and s_sk handed out
    SHARES_RECEIVED = "shares_received"  # the neighbours' shares decrypted and held
    MASKED = "masked"  # the update masked (once)
    SIGNED = "signed"  # the survivor set signed (consistency)
    UNMASKED = "unmasked"  # unmask shares released: the round is over for this client
    ABORTED = "aborted"  # refused: answers nothing more this round


class ClientEvent(str, Enum):
    """What moves the client: its own calls (advertise, mask) and the gateway's messages it accepted."""

    ADVERTISE = "advertise"
    ROSTER = "roster"
    ROUTED_SHARES = "routed_shares"
    MASK = "mask"
    SURVIVORS = "survivors"
    UNMASK_REQUEST = "unmask_request"


CLIENT_TABLE: TransitionTable[ClientStage, ClientEvent] = table(
    "secagg client",
    initial=ClientStage.INIT,
    error=ClientStage.ABORTED,
    terminal={ClientStage.UNMASKED},
    transitions={
        (ClientStage.INIT, ClientEvent.ADVERTISE): ClientStage.ADVERTISED,
        (ClientStage.ADVERTISED, ClientEvent.ROSTER): ClientStage.SHARES_SENT,
        (ClientStage.SHARES_SENT, ClientEvent.ROUTED_SHARES): ClientStage.SHARES_RECEIVED,
        (ClientStage.SHARES_RECEIVED, ClientEvent.MASK): ClientStage.MASKED,
        (ClientStage.MASKED, ClientEvent.SURVIVORS): ClientStage.SIGNED,
        (ClientStage.SIGNED, ClientEvent.UNMASK_REQUEST): ClientStage.UNMASKED,
    },
)
