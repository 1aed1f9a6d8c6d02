"""The SecAgg+ server's stage table (fl_protocol/secagg/server_stages.py): every transition, how the
server uses it (device input is ignored out of stage, a caller's wrong advance call breaks the server),
and the table as docs/architecture.md shows it."""

from __future__ import annotations

from pathlib import Path

import pytest

from fl_protocol.errors import ProtocolError
from fl_protocol.secagg.messages import Roster
from fl_protocol.secagg.server_stages import SERVER_TABLE, ServerEvent, ServerStage
from fl_protocol.secagg.simulate import Simulation
from fl_protocol.state_machine import TransitionError
from tests.state_matrix import check_transition_matrix

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
COLLECTING = [
    ServerStage.ADVERTISE,
    ServerStage.SHARE_KEYS,
    ServerStage.MASKED_COLLECTION,
    ServerStage.CONSISTENCY,
    ServerStage.UNMASK,
]
MESSAGES = [
    ServerEvent.ADVERTISE_KEYS,
    ServerEvent.SHARE_KEYS,
    ServerEvent.MASKED_UPDATE,
    ServerEvent.CONSISTENCY_SIGNATURE,
    ServerEvent.UNMASK_SHARES,
]


def test_every_stage_and_event_pair_is_allowed_or_refused_as_the_table_says() -> None:
    assert check_transition_matrix(SERVER_TABLE, ServerEvent) == len(ServerStage) * len(ServerEvent)


def test_each_collecting_stage_takes_exactly_its_own_message_kind() -> None:
    for stage, kind in zip(COLLECTING, MESSAGES, strict=True):
        assert [m for m in MESSAGES if SERVER_TABLE.next_state(stage, m) is stage] == [kind]
    for stage in (ServerStage.DONE, ServerStage.ABORTED, ServerStage.ERROR):
        assert all(SERVER_TABLE.next_state(stage, m) is None for m in ServerEvent)


def test_the_advance_calls_walk_the_protocol_order() -> None:
    calls = [
        ServerEvent.CLOSE_ADVERTISE,
        ServerEvent.CLOSE_SHARE_KEYS,
        ServerEvent.CLOSE_MASKED_COLLECTION,
        ServerEvent.UNMASK_REQUEST,
        ServerEvent.FINALIZE,
    ]
    stage = SERVER_TABLE.initial
    for call, following in zip(calls, [*COLLECTING[1:], ServerStage.DONE], strict=True):
        assert SERVER_TABLE.next_state(stage, call) is following
        stage = following
    assert SERVER_TABLE.next_state(ServerStage.UNMASK, ServerEvent.UNMASK_REQUEST) is ServerStage.UNMASK


def test_an_out_of_stage_device_message_is_ignored_and_the_server_carries_on() -> None:
    sim = Simulation(n=3, dimension=4, ring_bits=16)
    client = next(iter(sim.clients.values()))
    for each in sim.clients.values():
        assert sim.server.on_advertise(each.advertise())
    assert isinstance(sim.server.close_advertise(), Roster)
    assert not sim.server.on_advertise(client.advertise())  # advertise in SHARE_KEYS: ignored
    assert sim.server.stage is ServerStage.SHARE_KEYS


def test_a_wrong_advance_call_raises_and_leaves_the_server_broken() -> None:
    sim = Simulation(n=3, dimension=4, ring_bits=16)
    with pytest.raises(TransitionError, match="event 'finalize' is not allowed in state 'advertise'") as info:
        sim.server.finalize()
    assert isinstance(info.value, ProtocolError)
    assert sim.server.stage is ServerStage.ERROR
    for each in sim.clients.values():
        assert not sim.server.on_advertise(each.advertise())  # a broken server takes nothing
    with pytest.raises(TransitionError, match="in state 'error'"):
        sim.server.close_advertise()
    with pytest.raises(ProtocolError, match="routed shares exist only after close_share_keys"):
        sim.server.routed_shares_for("node-000")


def test_architecture_doc_shows_the_server_table() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    start = text.index("\n## State machine: SecAgg+ server\n")
    end = text.find("\n## ", start + 1)
    assert SERVER_TABLE.markdown() in text[start : None if end == -1 else end]
