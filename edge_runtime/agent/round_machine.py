"""The device round as a transition table: one state enum (`Phase`), one event enum, a table per variant.

A device's part in a round, from the task to its end (docs/device.md, "Lifecycle of a round"; the
tables are in docs/architecture.md, "State machine: device round"):

    offered --gates_passed--> ready --join--> joined --start--> ...variant... --> finished
    offered/ready --skip--> skipped          any joined state --withdraw--> withdrawn

After `start`, a SecAgg+ round (`SECURE_ROUND`) tracks two things that arrive in any order: the share
exchange (advertised → shares_sent → shares_in) and local training (`*_trained`); the upload is due when
both are done, then come the masked update, the consistency signature and the unmask shares. A
trusted-gateway round (`TRUSTED_ROUND`) only trains, uploads its plain update and finishes once the agent
recorded the upload. Both tables use the same states and events; each allows only its own path.

`Phase` is what round_state.json persists (its `phase` field): the agent writes the machine's state at the
durable checkpoints (skipped, joined, uploaded, and the end: finished or withdrawn), so the file always
names a state the machine was in. The strings of the earlier format (joined, uploaded, finished, skipped,
withdrawn) are unchanged, so older files read as before. WITHDRAWN is the tables' error state: a refused
event ends the round there, like a deliberate withdrawal.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from fl_protocol.state_machine import TransitionTable, table


class Phase(str, Enum):
    """The device round's states; the values are round_state.json's `phase` strings."""

    OFFERED = "offered"  # a new task for this device; the gates have not decided yet
    READY = "ready"  # the gates passed; waiting for the global model (or checking it)
    JOINED = "joined"  # model checked, round recorded as joined; nothing sent yet
    ADVERTISED = "advertised"  # SecAgg+: keys advertised, training running
    ADVERTISED_TRAINED = "advertised_trained"  # keys advertised, training done, roster not yet answered
    SHARES_SENT = "shares_sent"  # roster answered with encrypted shares, training running
    SHARES_SENT_TRAINED = "shares_sent_trained"  # shares sent, training done, neighbours' shares not in
    SHARES_IN = "shares_in"  # the neighbours' shares are in, training running
    TRAINING = "training"  # trusted mode: training running (nothing is advertised)
    UPLOAD_DUE = "upload_due"  # training done (and, SecAgg+, shares in): charge, encode, mask
    UPLOADED = "uploaded"  # ledger charged, update handed to the outbox
    SIGNED = "signed"  # SecAgg+: survivor set signed (consistency)
    FINISHED = "finished"  # unmask shares sent (trusted mode: upload recorded)
    SKIPPED = "skipped"  # a gate said no, or the model did not match or arrive; nothing was sent
    WITHDRAWN = "withdrawn"  # gave up (deadline, abort, refusal, failed training, restart, shutdown)


class RoundEvent(str, Enum):
    """What moves a device round: the agent's decisions, training, and the accepted gateway messages."""

    GATES_PASSED = "gates_passed"  # participation.decide said Ready
    SKIP = "skip"  # a gate said no, the model did not match or arrive, or a newer task came first
    JOIN = "join"  # the global model matched the task
    START = "start"  # keys advertised (SecAgg+) and training started
    ROSTER = "roster"  # the roster was answered with shares
    ROUTED_SHARES = "routed_shares"  # the neighbours' shares were taken
    TRAINED = "trained"  # local training finished well
    MASK = "mask"  # the encoded update was masked (trusted mode: wrapped as a PlainUpdate) and handed out
    UPLOAD_RECORDED = "upload_recorded"  # the agent persisted the upload (ends a trusted round)
    SURVIVORS = "survivors"  # the survivor set was signed
    UNMASK_REQUEST = "unmask_request"  # the unmask shares were released
    WITHDRAW = "withdraw"  # give the round up


Rows = Mapping[tuple[Phase, RoundEvent], Phase]

#: States in which the update is out: a restart there withdraws with the outbox note (docs/device.md).
UPLOADED_PHASES = frozenset({Phase.UPLOADED, Phase.SIGNED})

_INTAKE: Rows = {
    (Phase.OFFERED, RoundEvent.GATES_PASSED): Phase.READY,
    (Phase.OFFERED, RoundEvent.SKIP): Phase.SKIPPED,
    (Phase.READY, RoundEvent.SKIP): Phase.SKIPPED,
    (Phase.READY, RoundEvent.JOIN): Phase.JOINED,
}

_SECURE_STEPS: Rows = {
    (Phase.JOINED, RoundEvent.START): Phase.ADVERTISED,
    (Phase.ADVERTISED, RoundEvent.ROSTER): Phase.SHARES_SENT,
    (Phase.ADVERTISED, RoundEvent.TRAINED): Phase.ADVERTISED_TRAINED,
    (Phase.ADVERTISED_TRAINED, RoundEvent.ROSTER): Phase.SHARES_SENT_TRAINED,
    (Phase.SHARES_SENT, RoundEvent.ROUTED_SHARES): Phase.SHARES_IN,
    (Phase.SHARES_SENT, RoundEvent.TRAINED): Phase.SHARES_SENT_TRAINED,
    (Phase.SHARES_SENT_TRAINED, RoundEvent.ROUTED_SHARES): Phase.UPLOAD_DUE,
    (Phase.SHARES_IN, RoundEvent.TRAINED): Phase.UPLOAD_DUE,
    (Phase.UPLOAD_DUE, RoundEvent.MASK): Phase.UPLOADED,
    (Phase.UPLOADED, RoundEvent.SURVIVORS): Phase.SIGNED,
    (Phase.SIGNED, RoundEvent.UNMASK_REQUEST): Phase.FINISHED,
}

_TRUSTED_STEPS: Rows = {
    (Phase.JOINED, RoundEvent.START): Phase.TRAINING,
    (Phase.TRAINING, RoundEvent.TRAINED): Phase.UPLOAD_DUE,
    (Phase.UPLOAD_DUE, RoundEvent.MASK): Phase.UPLOADED,
    (Phase.UPLOADED, RoundEvent.UPLOAD_RECORDED): Phase.FINISHED,
}


def _device_round(name: str, steps: Rows) -> TransitionTable[Phase, RoundEvent]:
    """Intake rows + the variant's steps + a WITHDRAW row from every state a step leaves."""
    withdrawable = {state for (state, _) in steps}
    withdraw = {(state, RoundEvent.WITHDRAW): Phase.WITHDRAWN for state in withdrawable}
    return table(
        name,
        initial=Phase.OFFERED,
        error=Phase.WITHDRAWN,
        terminal={Phase.FINISHED, Phase.SKIPPED},
        transitions={**_INTAKE, **steps, **withdraw},
    )


#: A SecAgg+ round on the device (edge_runtime.agent.round.DeviceRound).
SECURE_ROUND = _device_round("device round", _SECURE_STEPS)
#: A trusted-gateway round on the device (edge_runtime.agent.trusted_round.TrustedDeviceRound).
TRUSTED_ROUND = _device_round("trusted device round", _TRUSTED_STEPS)
#: Phases after which nothing about the round happens any more (a restart leaves them as they are).
TERMINAL = frozenset({*SECURE_ROUND.terminal, SECURE_ROUND.error})


def round_table(*, trusted: bool) -> TransitionTable[Phase, RoundEvent]:
    """The table for a task: `TRUSTED_ROUND` if its secagg mode is trusted, else `SECURE_ROUND`."""
    return TRUSTED_ROUND if trusted else SECURE_ROUND
