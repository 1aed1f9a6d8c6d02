"""Table-driven state machines: every allowed transition in one table, one function applies it.

After python-hyper/h11's `_state.py`: a machine is a table `{(state, event): next_state}`. `apply(event)`
looks the pair up and moves; a pair that is not in the table is a `TransitionError` and puts the machine
in its error state, which accepts no event (it stays put, so a half-broken round never continues).
Terminal states accept nothing either. Roles use one machine per round (device round, gateway cohort,
cloud round); docs/architecture.md renders each table with `TransitionTable.markdown()`, and a test
checks that the docs match the code.

States and events are enums (str-valued, so they print as their wire or log words).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

from fl_protocol.errors import ProtocolError

S = TypeVar("S", bound=Enum)
E = TypeVar("E", bound=Enum)


class TransitionError(ProtocolError):
    """An event arrived that the machine's table does not allow in its current state.

    Attributes: machine (its name), state (the state it was in), event (the refused event).
    """

    def __init__(self, machine: str, state: Enum, event: Enum) -> None:
        super().__init__(f"{machine}: event {event.value!r} is not allowed in state {state.value!r}")
        self.machine = machine
        self.state = state
        self.event = event


@dataclass(frozen=True)
class TransitionTable(Generic[S, E]):
    """The transitions of one kind of machine.

    name: used in errors and docs. initial: the state a new machine starts in. error: the state a refused
    event leads to (no transitions may leave it). terminal: states with no way out other than none
    (checked: the table has no row leaving them). transitions: `{(state, event): next_state}`.

    Raises ValueError at construction if a row leaves the error or a terminal state.
    """

    name: str
    initial: S
    error: S
    terminal: frozenset[S]
    transitions: Mapping[tuple[S, E], S] = field(repr=False)

    def __post_init__(self) -> None:
        closed = self.terminal | {self.error}
        leaving = sorted(f"{s.value}+{e.value}" for (s, e) in self.transitions if s in closed)
        if leaving:
            raise ValueError(f"{self.name}: rows leave a terminal or error state: {', '.join(leaving)}")

    def next_state(self, state: S, event: E) -> S | None:
        """The state `event` leads to from `state`, or None if the table does not allow it."""
        return self.transitions.get((state, event))

    def states(self) -> list[S]:
        """Every state named in the table (plus initial and error), in enum order."""
        named = {self.initial, self.error, *self.terminal}
        for (state, _), target in self.transitions.items():
            named.update((state, target))
        kind = type(self.initial)
        return [s for s in kind if s in named]

    def events(self) -> list[E]:
        """Every event named in the table, in enum order."""
        named = {event for (_, event) in self.transitions}
        if not named:
            return []
        kind = type(next(iter(named)))
        return [e for e in kind if e in named]

    def rows(self) -> Iterator[tuple[S, E, S]]:
        """(state, event, next_state) for every allowed transition, in state then event order."""
        for state in self.states():
            for event in self.events():
                target = self.transitions.get((state, event))
                if target is not None:
                    yield state, event, target

    def markdown(self) -> str:
        """The table as a Markdown table (state | event | next state), as docs/architecture.md shows it."""
        lines = [
            "| state | event | next state |",
            "|---|---|---|",
            *(f"| `{s.value}` | `{e.value}` | `{t.value}` |" for s, e, t in self.rows()),
        ]
        return "\n".join(lines)


class StateMachine(Generic[S, E]):
    """One running machine over a `TransitionTable`.

    `apply(event)` moves to the table's next state and returns it; an event the table does not allow
    moves the machine to the error state and raises `TransitionError`. In the error state every event
    raises. Not thread-safe (each role drives its machines from one event loop).
    """

    def __init__(self, table: TransitionTable[S, E], state: S | None = None) -> None:
        self.table = table
        self._state: S = table.initial if state is None else state

    @property
    def state(self) -> S:
        """The current state."""
        return self._state

    @property
    def done(self) -> bool:
        """True in a terminal or the error state."""
        return self._state in self.table.terminal or self._state is self.table.error

    def can(self, event: E) -> bool:
        """True if `apply(event)` would succeed now (nothing changes)."""
        return self.table.next_state(self._state, event) is not None

    def apply(self, event: E) -> S:
        """Take `event`: returns the new state, or raises `TransitionError` (and enters the error state)."""
        target = self.table.next_state(self._state, event)
        if target is None:
            refused_in = self._state
            self._state = self.table.error
            raise TransitionError(self.table.name, refused_in, event)
        self._state = target
        return target

    def fail(self) -> S:
        """Enter the error state directly (e.g. on a fault outside the table); returns it."""
        self._state = self.table.error
        return self._state


def table(
    name: str,
    *,
    initial: S,
    error: S,
    terminal: Iterable[S],
    transitions: Mapping[tuple[S, E], S],
) -> TransitionTable[S, E]:
    """Build a `TransitionTable` (keyword-only; see the class for the fields and the errors raised)."""
    return TransitionTable(
        name=name, initial=initial, error=error, terminal=frozenset(terminal), transitions=dict(transitions)
    )
