"""The cloud round state machine: every (state, event) pair, the run's outcome words, and the docs' table."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator_gateway.cloud.lifecycle import TABLE, CloudEvent, CloudFault, CloudLifecycle, CloudState
from fl_protocol.errors import ProtocolError
from fl_protocol.stages import NodeState
from tests.state_matrix import check_transition_matrix

ROOT = Path(__file__).resolve().parents[2]


def test_transition_matrix() -> None:
    assert check_transition_matrix(TABLE, CloudEvent) == len(CloudState) * len(CloudEvent)


def test_table_names_every_state_and_event() -> None:
    assert TABLE.states() == list(CloudState)
    assert TABLE.events() == list(CloudEvent)
    assert TABLE.terminal == {CloudState.FINISHED, CloudState.GAVE_UP}


def test_a_failed_attempt_is_retried_then_completed_and_finished() -> None:
    run = CloudLifecycle()
    steps = [
        (CloudEvent.SCHEDULE, CloudState.SCHEDULED, NodeState.RUNNING),
        (CloudEvent.PUBLISH_TASK, CloudState.COLLECTING, NodeState.RUNNING),
        (CloudEvent.DEADLINE, CloudState.COMBINING, NodeState.RUNNING),
        (CloudEvent.FAIL, CloudState.FAILED, NodeState.RUNNING),
        (CloudEvent.RETRY, CloudState.SCHEDULED, NodeState.RUNNING),
        (CloudEvent.PUBLISH_TASK, CloudState.COLLECTING, NodeState.RUNNING),
        (CloudEvent.ALL_ANSWERED, CloudState.COMBINING, NodeState.RUNNING),
        (CloudEvent.COMMIT, CloudState.COMPLETED, NodeState.RUNNING),
        (CloudEvent.FINISH, CloudState.FINISHED, NodeState.DONE),
    ]
    for event, state, word in steps:
        assert not run.done
        assert run.apply(event) is state and run.state is state
        assert run.node_state is word
    assert run.done and run.succeeded


def test_giving_up_ends_the_run_as_failed() -> None:
    run = CloudLifecycle()
    for event in (CloudEvent.SCHEDULE, CloudEvent.PUBLISH_TASK, CloudEvent.ALL_SAT_OUT, CloudEvent.FAIL):
        run.apply(event)
    assert run.apply(CloudEvent.GIVE_UP) is CloudState.GAVE_UP
    assert run.done and not run.succeeded and run.node_state is NodeState.FAILED


def test_a_refused_event_is_a_cloud_fault_and_the_error_state_stays() -> None:
    run = CloudLifecycle()
    run.apply(CloudEvent.SCHEDULE)
    with pytest.raises(CloudFault, match="event 'commit' is not allowed in state 'scheduled'"):
        run.apply(CloudEvent.COMMIT)
    assert run.state is CloudState.ERROR and run.done and not run.succeeded
    assert run.node_state is NodeState.FAILED
    with pytest.raises(CloudFault, match="not allowed in state 'error'"):
        run.apply(CloudEvent.SCHEDULE)
    # the event loop must treat it as the cloud's own fault (exit 70), not as a peer's ProtocolError
    assert issubclass(CloudFault, RuntimeError) and not issubclass(CloudFault, ProtocolError)


def test_fail_enters_the_error_state() -> None:
    run = CloudLifecycle()
    run.apply(CloudEvent.SCHEDULE)
    run.fail()
    assert run.state is CloudState.ERROR and run.done


def test_architecture_doc_shows_the_table() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## State machine: cloud round", 1)
    assert len(section) == 2, "docs/architecture.md lacks the section '## State machine: cloud round'"
    assert TABLE.markdown() in section[1]
