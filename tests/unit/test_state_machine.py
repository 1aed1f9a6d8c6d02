"""The generic table-driven state machine (fl_protocol.state_machine)."""

from __future__ import annotations

from enum import Enum

import pytest

from fl_protocol.errors import ProtocolError
from fl_protocol.state_machine import StateMachine, TransitionError, table
from tests.state_matrix import check_transition_matrix


class Light(str, Enum):
    OFF = "off"
    ON = "on"
    BROKEN = "broken"
    GONE = "gone"


class Press(str, Enum):
    SWITCH = "switch"
    REMOVE = "remove"


LIGHT = table(
    "light",
    initial=Light.OFF,
    error=Light.BROKEN,
    terminal={Light.GONE},
    transitions={
        (Light.OFF, Press.SWITCH): Light.ON,
        (Light.ON, Press.SWITCH): Light.OFF,
        (Light.OFF, Press.REMOVE): Light.GONE,
    },
)


def test_allowed_events_move_and_refused_ones_stick_in_the_error_state() -> None:
    machine = StateMachine(LIGHT)
    assert machine.state is Light.OFF and not machine.done
    assert machine.apply(Press.SWITCH) is Light.ON
    assert machine.can(Press.SWITCH) and not machine.can(Press.REMOVE)
    with pytest.raises(TransitionError, match="event 'remove' is not allowed in state 'on'") as info:
        machine.apply(Press.REMOVE)
    assert isinstance(info.value, ProtocolError)
    assert (info.value.state, info.value.event) == (Light.ON, Press.REMOVE)
    assert machine.state is Light.BROKEN and machine.done
    with pytest.raises(TransitionError, match="in state 'broken'"):
        machine.apply(Press.SWITCH)


def test_terminal_states_accept_nothing() -> None:
    machine = StateMachine(LIGHT)
    machine.apply(Press.REMOVE)
    assert machine.done
    with pytest.raises(TransitionError, match="in state 'gone'"):
        machine.apply(Press.SWITCH)


def test_fail_enters_the_error_state() -> None:
    machine = StateMachine(LIGHT)
    assert machine.fail() is Light.BROKEN and machine.done


def test_a_table_with_a_row_leaving_a_terminal_or_error_state_is_refused() -> None:
    with pytest.raises(ValueError, match=r"light: rows leave a terminal or error state: gone\+switch"):
        table(
            "light",
            initial=Light.OFF,
            error=Light.BROKEN,
            terminal={Light.GONE},
            transitions={(Light.GONE, Press.SWITCH): Light.OFF},
        )


def test_matrix_helper_checks_every_pair_and_markdown_lists_every_row() -> None:
    assert check_transition_matrix(LIGHT) == 4 * 2
    assert LIGHT.markdown().splitlines() == [
        "| state | event | next state |",
        "|---|---|---|",
        "| `off` | `switch` | `on` |",
        "| `off` | `remove` | `gone` |",
        "| `on` | `switch` | `off` |",
    ]
