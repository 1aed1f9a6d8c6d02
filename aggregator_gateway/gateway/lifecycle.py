"""The gateway cohort's round as one table-driven state machine (fl_protocol.state_machine).

A round at the gateway collects one uplink stage after the other, in the order of
`fl_protocol.stages.round_stages(trusted=...)`: advertise, shares, masked, consistency, unmask for
secure aggregation, masked alone in trusted mode (docs/robustness.md). Each stage ends with one of three
events:

- `close`: the stage closed and the next one opens (its downlink messages go out);
- `release`: the last stage closed and the partial aggregate is computed (state `done`);
- `abort`: the round is abandoned and nothing is released (state `aborted`).

Both tables come from `cohort_table(trusted=...)`; docs/architecture.md ("State machine: gateway cohort")
shows them. `CohortMachine` is the running machine both round drivers hold (rounds.py, trusted.py): its
state replaces the stage, finished and aborted fields they used to keep side by side. Each group of a
secure round is a `SecAggServer` with its own table (fl_protocol/secagg/server_stages.py).
"""

from __future__ import annotations

import itertools
from enum import Enum

from fl_protocol.stages import Stage, round_stages
from fl_protocol.state_machine import StateMachine, TransitionTable, table


class CohortState(str, Enum):
    """Where a gateway round stands: collecting an uplink stage (same word as `Stage`), or ended."""

    ADVERTISE = "advertise"
    SHARES = "shares"
    MASKED = "masked"
    CONSISTENCY = "consistency"
    UNMASK = "unmask"
    DONE = "done"  # the partial aggregate is computed
    ABORTED = "aborted"  # nothing is released
    ERROR = "error"  # a transition the table refuses happened: a bug; the round accepts nothing


_ENDS = frozenset({CohortState.DONE, CohortState.ABORTED, CohortState.ERROR})


class CohortEvent(str, Enum):
    """How a stage ends (see the module docstring)."""

    CLOSE = "close"
    RELEASE = "release"
    ABORT = "abort"


def collecting(stage: Stage) -> CohortState:
    """The state that collects uplink `stage` (ValueError for a stage no round collects)."""
    state = CohortState(stage.value)
    if state in _ENDS:
        raise ValueError(f"no gateway round collects stage {stage.value!r}")
    return state


def cohort_table(*, trusted: bool) -> TransitionTable[CohortState, CohortEvent]:
    """The transitions of a gateway round: its stages from `round_stages(trusted=trusted)` in order,
    `close` from each to the next, `release` from the last to done, `abort` from any to aborted."""
    states = [collecting(stage) for stage in round_stages(trusted=trusted)]
    rows = {(state, CohortEvent.CLOSE): following for state, following in itertools.pairwise(states)}
    rows[(states[-1], CohortEvent.RELEASE)] = CohortState.DONE
    rows.update({(state, CohortEvent.ABORT): CohortState.ABORTED for state in states})
    return table(
        "gateway trusted cohort" if trusted else "gateway cohort",
        initial=states[0],
        error=CohortState.ERROR,
        terminal={CohortState.DONE, CohortState.ABORTED},
        transitions=rows,
    )


#: A secure-aggregation round (SecAgg+ stages).
SECURE_COHORT_TABLE = cohort_table(trusted=False)
#: A trusted-gateway round (one stage of plain updates).
TRUSTED_COHORT_TABLE = cohort_table(trusted=True)


class CohortMachine(StateMachine[CohortState, CohortEvent]):
    """One round's machine over `SECURE_COHORT_TABLE` or `TRUSTED_COHORT_TABLE`.

    Adds the gateway's reading of the state: `stage` (the uplink stage being collected) and `abort()`,
    which a broken round (error state) also accepts. Not thread-safe (the gateway's event loop drives it).
    """

    def __init__(self, *, trusted: bool) -> None:
        super().__init__(TRUSTED_COHORT_TABLE if trusted else SECURE_COHORT_TABLE)

    @property
    def stage(self) -> Stage | None:
        """The uplink stage being collected; None once the round ended (done, aborted or error)."""
        return None if self.state in _ENDS else Stage(self.state.value)

    def abort(self) -> CohortState:
        """Take `abort`: aborted from a collecting stage; the error state stays as it is (its round is
        abandoned too). Raises `TransitionError` for a round that already ended (done or aborted)."""
        if self.state is self.table.error:
            return self.state
        return self.apply(CohortEvent.ABORT)


class CohortStateMixin:
    """`state`, `stage` and `finished` of a round driver, read from its `machine` (both drivers)."""

    machine: CohortMachine

    @property
    def state(self) -> CohortState:
        """Where the round stands (the machine's state)."""
        return self.machine.state

    @property
    def stage(self) -> Stage | None:
        """The uplink stage being collected; None once the round ended."""
        return self.machine.stage

    @property
    def finished(self) -> bool:
        """True once the round ended (done, aborted, or broken by a refused transition)."""
        return self.machine.done
