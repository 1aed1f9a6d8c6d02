"""Transition-matrix checks for table-driven state machines (fl_protocol.state_machine).

`check_transition_matrix(table)` drives a fresh machine into every state of the table and offers it
every event: an allowed pair must land on the table's next state, any other pair must raise
`TransitionError` and leave the machine in the error state, where every event raises again. Like Flower's
secaggplus_mod_test.py, every valid and invalid transition is exercised, not only the happy path.
"""

from __future__ import annotations

from enum import Enum

import pytest

from fl_protocol.state_machine import StateMachine, TransitionError, TransitionTable


def check_transition_matrix(table: TransitionTable, events: type[Enum] | None = None) -> int:
    """Check every (state, event) pair of `table`; returns how many pairs were checked.

    events: the event enum (default: the enum of the table's events), so events the table never names
    are offered too.
    """
    kinds = list(events) if events is not None else table.events()
    checked = 0
    for state in table.states():
        for event in kinds:
            machine = StateMachine(table, state)
            target = table.next_state(state, event)
            if target is not None:
                assert machine.apply(event) is target
            else:
                with pytest.raises(TransitionError, match="is not allowed in state"):
                    machine.apply(event)
                assert machine.state is table.error
                with pytest.raises(TransitionError, match="is not allowed in state"):
                    machine.apply(event)
            checked += 1
    return checked
