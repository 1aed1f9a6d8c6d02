"""The SecAgg+ server's stages as one transition table (fl_protocol.state_machine).

A `SecAggServer` (fl_protocol/secagg/server.py) collects one kind of device message per stage and moves
on only when its caller closes the stage (docs/secure-aggregation.md):

    advertise --close_advertise--> shares --close_share_keys--> masked --close_masked_collection-->
    consistency --unmask_request--> unmask --finalize--> done

and any collecting stage goes to `aborted` when closing it leaves fewer than t (or fewer than the survivor
floor) nodes. Two kinds of event share the table:

- device messages (`advertise_keys`, `share_keys`, `masked_update`, `consistency_signature`,
  `unmask_shares`) are self-loops of the one stage that takes them. Device input never raises: the server
  asks `can(event)` and ignores a message the table does not allow, so a stale or early message cannot
  break the round;
- the caller's advance calls (`close_advertise`, ..., `finalize`, `abort`) move the stage. Calling one the
  table does not allow is a bug of the caller: `TransitionError` (a ProtocolError), and the server enters
  `error`, where it accepts nothing. `unmask_request` is also a self-loop of `unmask`: once issued, the
  request is returned again unchanged.

State values are the round's stage words (fl_protocol.stages.Stage) where a stage collects on a topic;
the names are the protocol's (SHARE_KEYS, MASKED_COLLECTION), as logs print them.
"""

from __future__ import annotations

from enum import Enum

from fl_protocol.state_machine import TransitionTable, table


class ServerStage(str, Enum):
    """Server stages, in protocol order, then the two ends and the error state."""

    ADVERTISE = "advertise"
    SHARE_KEYS = "shares"
    MASKED_COLLECTION = "masked"
    CONSISTENCY = "consistency"
    UNMASK = "unmask"
    DONE = "done"
    ABORTED = "aborted"
    ERROR = "error"


class ServerEvent(str, Enum):
    """What happens to a server: a device message arrives, or the caller advances the stage."""

    # device -> server (self-loops of the stage that takes them)
    ADVERTISE_KEYS = "advertise_keys"
    SHARE_KEYS = "share_keys"
    MASKED_UPDATE = "masked_update"
    CONSISTENCY_SIGNATURE = "consistency_signature"
    UNMASK_SHARES = "unmask_shares"
    # the caller's advance calls (the methods of the same name)
    CLOSE_ADVERTISE = "close_advertise"
    CLOSE_SHARE_KEYS = "close_share_keys"
    CLOSE_MASKED_COLLECTION = "close_masked_collection"
    UNMASK_REQUEST = "unmask_request"
    FINALIZE = "finalize"
    ABORT = "abort"


#: The stages that collect device messages, each with the message it takes and the call that closes it.
_COLLECTING: tuple[tuple[ServerStage, ServerEvent, ServerEvent, ServerStage], ...] = (
    (ServerStage.ADVERTISE, ServerEvent.ADVERTISE_KEYS, ServerEvent.CLOSE_ADVERTISE, ServerStage.SHARE_KEYS),
    (
        ServerStage.SHARE_KEYS,
        ServerEvent.SHARE_KEYS,
        ServerEvent.CLOSE_SHARE_KEYS,
        ServerStage.MASKED_COLLECTION,
    ),
    (
        ServerStage.MASKED_COLLECTION,
        ServerEvent.MASKED_UPDATE,
        ServerEvent.CLOSE_MASKED_COLLECTION,
        ServerStage.CONSISTENCY,
    ),
    (
        ServerStage.CONSISTENCY,
        ServerEvent.CONSISTENCY_SIGNATURE,
        ServerEvent.UNMASK_REQUEST,
        ServerStage.UNMASK,
    ),
    (ServerStage.UNMASK, ServerEvent.UNMASK_SHARES, ServerEvent.FINALIZE, ServerStage.DONE),
)


def _server_table() -> TransitionTable[ServerStage, ServerEvent]:
    rows: dict[tuple[ServerStage, ServerEvent], ServerStage] = {}
    for stage, message, close, following in _COLLECTING:
        rows[(stage, message)] = stage
        rows[(stage, close)] = following
        rows[(stage, ServerEvent.ABORT)] = ServerStage.ABORTED
    rows[(ServerStage.UNMASK, ServerEvent.UNMASK_REQUEST)] = ServerStage.UNMASK  # idempotent once issued
    return table(
        "secagg server",
        initial=ServerStage.ADVERTISE,
        error=ServerStage.ERROR,
        terminal={ServerStage.DONE, ServerStage.ABORTED},
        transitions=rows,
    )


#: Every transition of a SecAgg+ server; docs/architecture.md ("State machine: SecAgg+ server") shows it.
SERVER_TABLE: TransitionTable[ServerStage, ServerEvent] = _server_table()
