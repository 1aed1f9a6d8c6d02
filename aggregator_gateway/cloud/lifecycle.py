"""The cloud round state machine: the lifecycle of every round attempt and the end of the run.

One machine per cloud process, over `fl_protocol.state_machine` (every allowed transition in `TABLE`,
anything else is refused and leaves the machine in ERROR). A round attempt goes

    idle / completed / failed --schedule or retry--> scheduled --publish_task--> collecting
    collecting --all_answered | all_sat_out | deadline--> combining --commit--> completed
                                                                   --fail--> failed

and the run ends from `completed` (or from `idle`, when the store already holds every planned round)
with `finish` (FINISHED, status "done"), or from `failed` with `give_up` once more than `max_retries`
attempts failed in a row (GAVE_UP, status "failed"). ERROR is a fault in the cloud's own code or I/O:
the process exits 70 and its restart settles the interrupted round from the store
(docs/failure-policy.md, "Cloud restart"). docs/architecture.md shows `TABLE.markdown()`; a test checks it.
"""

from __future__ import annotations

from enum import Enum

from fl_protocol.stages import NodeState
from fl_protocol.state_machine import StateMachine, TransitionError, TransitionTable, table


class CloudState(str, Enum):
    """Where the cloud is in its run (values are the words its log and docs use)."""

    IDLE = "idle"  # constructed, nothing published yet
    SCHEDULED = "scheduled"  # an attempt has its round id and a durable record; its task is not out yet
    COLLECTING = "collecting"  # the task is out: partials, gateway aborts and sit-outs are collected
    COMBINING = "combining"  # the attempt closed: combine, server optimizer, commit
    COMPLETED = "completed"  # the attempt committed a new model version
    FAILED = "failed"  # the attempt produced no model version (recorded as failed)
    FINISHED = "finished"  # every planned round completed (terminal)
    GAVE_UP = "gave_up"  # more than max_retries failed attempts in a row (terminal)
    ERROR = "error"  # a fault in the cloud's own code or I/O (the process exits 70)


class CloudEvent(str, Enum):
    """What moves the cloud from one state to the next."""

    SCHEDULE = "schedule"  # open the next round
    RETRY = "retry"  # open a new attempt after a failed one (same model version, new round id)
    PUBLISH_TASK = "publish_task"  # the signed task went out (retained)
    ALL_ANSWERED = "all_answered"  # every registered gateway sent a partial or an abort
    ALL_SAT_OUT = "all_sat_out"  # every device of the fleet said it sits the round out
    DEADLINE = "deadline"  # the `partial` deadline passed
    COMMIT = "commit"  # the new model version is stored
    FAIL = "fail"  # no usable partial, or they could not be combined
    FINISH = "finish"  # every planned round completed
    GIVE_UP = "give_up"  # the retry budget is spent


_S, _E = CloudState, CloudEvent

#: Every transition the cloud allows; see the module docstring for the picture.
TABLE: TransitionTable[CloudState, CloudEvent] = table(
    "cloud round",
    initial=_S.IDLE,
    error=_S.ERROR,
    terminal=(_S.FINISHED, _S.GAVE_UP),
    transitions={
        (_S.IDLE, _E.SCHEDULE): _S.SCHEDULED,
        (_S.IDLE, _E.FINISH): _S.FINISHED,
        (_S.SCHEDULED, _E.PUBLISH_TASK): _S.COLLECTING,
        (_S.COLLECTING, _E.ALL_ANSWERED): _S.COMBINING,
        (_S.COLLECTING, _E.ALL_SAT_OUT): _S.COMBINING,
        (_S.COLLECTING, _E.DEADLINE): _S.COMBINING,
        (_S.COMBINING, _E.COMMIT): _S.COMPLETED,
        (_S.COMBINING, _E.FAIL): _S.FAILED,
        (_S.COMPLETED, _E.SCHEDULE): _S.SCHEDULED,
        (_S.COMPLETED, _E.FINISH): _S.FINISHED,
        (_S.FAILED, _E.RETRY): _S.SCHEDULED,
        (_S.FAILED, _E.GIVE_UP): _S.GAVE_UP,
    },
)


class CloudFault(RuntimeError):
    """The cloud refused one of its own transitions: a bug in this process, never a peer's fault.

    A RuntimeError on purpose: the role's event loop treats it as a role fault (exit 70, restart from the
    store) rather than as a peer's ProtocolError that is logged and ignored.
    """


class CloudLifecycle:
    """The running machine over `TABLE`, with the run's outcome in the words the cloud publishes."""

    def __init__(self) -> None:
        self._machine: StateMachine[CloudState, CloudEvent] = StateMachine(TABLE)

    @property
    def state(self) -> CloudState:
        """The current state."""
        return self._machine.state

    @property
    def done(self) -> bool:
        """True once the run ended: FINISHED, GAVE_UP or ERROR."""
        return self._machine.done

    @property
    def succeeded(self) -> bool:
        """True if every planned round completed (FINISHED)."""
        return self._machine.state is CloudState.FINISHED

    @property
    def node_state(self) -> NodeState:
        """The cloud's status word: DONE when finished, FAILED after giving up or a fault, else RUNNING."""
        if self.succeeded:
            return NodeState.DONE
        return NodeState.FAILED if self.done else NodeState.RUNNING

    def apply(self, event: CloudEvent) -> CloudState:
        """Take `event`; returns the new state.

        Raises CloudFault (the machine is then in ERROR) if `TABLE` does not allow it in this state.
        """
        try:
            return self._machine.apply(event)
        except TransitionError as exc:
            raise CloudFault(str(exc)) from exc

    def fail(self) -> None:
        """Enter ERROR: a fault outside the table (an exception in the cloud's own code or I/O)."""
        self._machine.fail()
