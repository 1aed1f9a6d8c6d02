"""The device round's transition tables (edge_runtime.agent.round_machine): every pair of state and event,
the persisted phases (round_state.json, including files written before the tables existed), the machine
handed from the agent to a round variant, and the tables in docs/architecture.md."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.agent.round import DeviceRound
from edge_runtime.agent.round_api import Finished, RoundVariant, Send, StartTraining, UploadDue
from edge_runtime.agent.round_machine import (
    SECURE_ROUND,
    TERMINAL,
    TRUSTED_ROUND,
    UPLOADED_PHASES,
    Phase,
    RoundEvent,
    round_table,
)
from edge_runtime.agent.state import STATE_FILE, DeviceState
from edge_runtime.agent.trusted_round import TrustedDeviceRound
from fl_protocol.state_machine import StateMachine
from tests.state_matrix import check_transition_matrix
from tests.unit.test_device_round import make_task

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("table", [SECURE_ROUND, TRUSTED_ROUND], ids=lambda t: t.name)
def test_every_state_and_event_pair(table) -> None:
    assert check_transition_matrix(table, RoundEvent) == len(table.states()) * len(RoundEvent)


def test_phase_is_exactly_the_states_of_the_tables() -> None:
    """The persisted phase maps 1:1 onto the machine's states: no state without a phase and vice versa."""
    assert set(SECURE_ROUND.states()) | set(TRUSTED_ROUND.states()) == set(Phase)
    assert TERMINAL == {Phase.FINISHED, Phase.SKIPPED, Phase.WITHDRAWN}
    assert round_table(trusted=True) is TRUSTED_ROUND and round_table(trusted=False) is SECURE_ROUND


def _walk(table, events: list[RoundEvent]) -> list[Phase]:
    machine = StateMachine(table)
    return [machine.apply(event) for event in events]


def test_secure_round_paths_training_before_and_after_the_share_exchange() -> None:
    intake = [RoundEvent.GATES_PASSED, RoundEvent.JOIN, RoundEvent.START]
    tail = [RoundEvent.MASK, RoundEvent.SURVIVORS, RoundEvent.UNMASK_REQUEST]
    early = _walk(
        SECURE_ROUND, [*intake, RoundEvent.TRAINED, RoundEvent.ROSTER, RoundEvent.ROUTED_SHARES, *tail]
    )
    assert early[3:6] == [Phase.ADVERTISED_TRAINED, Phase.SHARES_SENT_TRAINED, Phase.UPLOAD_DUE]
    late = _walk(
        SECURE_ROUND, [*intake, RoundEvent.ROSTER, RoundEvent.ROUTED_SHARES, RoundEvent.TRAINED, *tail]
    )
    assert late[3:6] == [Phase.SHARES_SENT, Phase.SHARES_IN, Phase.UPLOAD_DUE]
    assert early[-3:] == late[-3:] == [Phase.UPLOADED, Phase.SIGNED, Phase.FINISHED]
    assert UPLOADED_PHASES == {Phase.UPLOADED, Phase.SIGNED}


def test_the_trusted_table_has_no_secagg_steps_and_the_secure_one_no_recorded_upload() -> None:
    trusted = _walk(
        TRUSTED_ROUND,
        [
            RoundEvent.GATES_PASSED,
            RoundEvent.JOIN,
            RoundEvent.START,
            RoundEvent.TRAINED,
            RoundEvent.MASK,
            RoundEvent.UPLOAD_RECORDED,
        ],
    )
    assert trusted == [
        Phase.READY,
        Phase.JOINED,
        Phase.TRAINING,
        Phase.UPLOAD_DUE,
        Phase.UPLOADED,
        Phase.FINISHED,
    ]
    assert not StateMachine(TRUSTED_ROUND, Phase.UPLOADED).can(RoundEvent.SURVIVORS)
    assert not StateMachine(SECURE_ROUND, Phase.UPLOADED).can(RoundEvent.UPLOAD_RECORDED)
    for table in (SECURE_ROUND, TRUSTED_ROUND):
        assert not StateMachine(table, Phase.READY).can(RoundEvent.WITHDRAW)  # before joining: skipped
        assert StateMachine(table, Phase.READY).apply(RoundEvent.SKIP) is Phase.SKIPPED


def test_variants_implement_the_round_protocol_and_take_over_the_agents_machine() -> None:
    with pytest.raises(ValueError, match="starts from a machine of its own table in state 'joined'"):
        TrustedDeviceRound(
            make_task(mode="trusted"), "dev-a", machine=StateMachine(SECURE_ROUND, Phase.JOINED)
        )
    machine = StateMachine(TRUSTED_ROUND, Phase.JOINED)
    trusted: RoundVariant = TrustedDeviceRound(make_task(mode="trusted"), "dev-a", machine=machine)
    assert trusted.start() == [StartTraining()] and machine.state is Phase.TRAINING
    assert trusted.on_roster(None) == [] and trusted.phase is Phase.TRAINING  # type: ignore[arg-type]
    assert trusted.on_training_done(ok=True) == [UploadDue()]
    (send,) = trusted.mask(np.zeros(16, dtype=np.uint32))
    assert isinstance(send, Send) and trusted.phase is Phase.UPLOADED
    assert trusted.uploaded() == [Finished(Phase.FINISHED, "")] and machine.state is Phase.FINISHED


def test_a_secure_round_refuses_a_machine_of_another_state() -> None:
    with pytest.raises(ValueError, match="device round starts from a machine"):
        DeviceRound(make_task(), None, machine=StateMachine(SECURE_ROUND, Phase.READY))  # type: ignore[arg-type]


def test_withdrawing_ends_in_the_error_state_from_any_joined_phase() -> None:
    device = TrustedDeviceRound(make_task(mode="trusted"), "dev-a")
    device.start()
    (finished,) = device.withdraw("shutting down")
    assert finished == Finished(Phase.WITHDRAWN, "shutting down") and device.done
    assert device.withdraw("again") == [] and device.phase is Phase.WITHDRAWN


@pytest.mark.parametrize("phase", list(Phase), ids=lambda p: p.value)
def test_every_phase_round_trips_through_round_state_json(tmp_path: Path, phase: Phase) -> None:
    DeviceState(tmp_path).set(9, phase, "why")
    record = DeviceState(tmp_path).record
    assert record is not None and (record.round_id, record.phase, record.reason) == (9, phase, "why")


@pytest.mark.parametrize(
    ("old_phase", "withdrawn_reason"),
    [
        ("joined", "restarted mid-round"),
        ("uploaded", "restarted after upload; outbox re-sends the same update"),
        ("finished", None),
        ("skipped", None),
        ("withdrawn", None),
    ],
)
def test_a_round_state_file_written_before_the_tables_reads_unchanged(
    tmp_path: Path, old_phase: str, withdrawn_reason: str | None
) -> None:
    """Byte for byte what the agent wrote before the phases became the machine's states."""
    doc = {"format": "fedlora-device-state", "phase": old_phase, "reason": "", "round_id": 12, "version": 1}
    (tmp_path / STATE_FILE).write_text(json.dumps(doc, sort_keys=True))
    state = DeviceState(tmp_path)
    assert state.record is not None and state.record.phase is Phase(old_phase) and state.last_round == 12
    interrupted = state.withdraw_interrupted()
    if withdrawn_reason is None:
        assert interrupted is None and state.record.phase is Phase(old_phase)
    else:
        assert interrupted is not None and interrupted.phase is Phase(old_phase)
        assert state.record.phase is Phase.WITHDRAWN and state.record.reason == withdrawn_reason


def _section(heading: str) -> str:
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert heading in text, f"docs/architecture.md lacks {heading!r}"
    body = text.split(heading, 1)[1]
    return body.split("\n## ", 1)[0]


def test_docs_show_the_device_round_tables() -> None:
    section = _section("## State machine: device round")
    assert SECURE_ROUND.markdown() in section
    assert TRUSTED_ROUND.markdown() in section
