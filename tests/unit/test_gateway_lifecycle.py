"""The gateway cohort's state machine (aggregator_gateway/gateway/lifecycle.py): every transition of both
tables, the machine's reading of its state, and the tables as docs/architecture.md shows them."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator_gateway.gateway.lifecycle import (
    SECURE_COHORT_TABLE,
    TRUSTED_COHORT_TABLE,
    CohortEvent,
    CohortMachine,
    CohortState,
    cohort_table,
    collecting,
)
from fl_protocol.stages import SECURE_ROUND_STAGES, TRUSTED_ROUND_STAGES, Stage
from fl_protocol.state_machine import TransitionError, TransitionTable
from tests.state_matrix import check_transition_matrix

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def _walk(table: TransitionTable) -> list[CohortState]:
    """The states a round passes through when every stage closes and the last one releases."""
    states = [table.initial]
    while (following := table.next_state(states[-1], CohortEvent.CLOSE)) is not None:
        states.append(following)
    states.append(table.next_state(states[-1], CohortEvent.RELEASE))
    return states


@pytest.mark.parametrize("table", [SECURE_COHORT_TABLE, TRUSTED_COHORT_TABLE], ids=["secure", "trusted"])
def test_every_state_and_event_pair_is_allowed_or_refused_as_the_table_says(table: TransitionTable) -> None:
    states = len(table.states())
    assert check_transition_matrix(table, CohortEvent) == states * len(CohortEvent)


def test_the_stages_come_in_the_order_of_the_round_vocabulary() -> None:
    assert _walk(SECURE_COHORT_TABLE) == [*(collecting(s) for s in SECURE_ROUND_STAGES), CohortState.DONE]
    assert _walk(TRUSTED_COHORT_TABLE) == [*(collecting(s) for s in TRUSTED_ROUND_STAGES), CohortState.DONE]
    assert cohort_table(trusted=True).name == "gateway trusted cohort"


def test_every_collecting_stage_can_abort_and_nothing_leaves_the_ends() -> None:
    for table in (SECURE_COHORT_TABLE, TRUSTED_COHORT_TABLE):
        ends = {CohortState.DONE, CohortState.ABORTED, CohortState.ERROR}
        for state in table.states():
            aborts = table.next_state(state, CohortEvent.ABORT)
            assert aborts is (None if state in ends else CohortState.ABORTED), state


def test_collecting_refuses_a_stage_no_round_collects() -> None:
    assert collecting(Stage.MASKED) is CohortState.MASKED
    with pytest.raises(ValueError, match="'roster' is not a valid CohortState"):
        collecting(Stage.ROSTER)


def test_machine_reads_the_stage_from_its_state() -> None:
    machine = CohortMachine(trusted=False)
    assert machine.stage is Stage.ADVERTISE and not machine.done
    machine.apply(CohortEvent.CLOSE)
    assert machine.stage is Stage.SHARES
    assert machine.abort() is CohortState.ABORTED
    assert machine.stage is None and machine.done
    trusted = CohortMachine(trusted=True)
    assert trusted.stage is Stage.MASKED
    assert trusted.apply(CohortEvent.RELEASE) is CohortState.DONE and trusted.stage is None


def test_abort_of_an_ended_round_is_refused_but_a_broken_round_stays_broken() -> None:
    done = CohortMachine(trusted=True)
    done.apply(CohortEvent.RELEASE)
    with pytest.raises(TransitionError, match="event 'abort' is not allowed in state 'done'"):
        done.abort()
    broken = CohortMachine(trusted=False)
    with pytest.raises(TransitionError, match="event 'release' is not allowed in state 'advertise'"):
        broken.apply(CohortEvent.RELEASE)  # a result before the last stage: a bug
    assert broken.abort() is CohortState.ERROR and broken.stage is None


def _section(title: str) -> str:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : None if end == -1 else end]


def test_architecture_doc_shows_both_cohort_tables() -> None:
    section = _section("State machine: gateway cohort")
    assert SECURE_COHORT_TABLE.markdown() in section
    assert TRUSTED_COHORT_TABLE.markdown() in section
