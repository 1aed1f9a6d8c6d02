"""The SecAgg+ client's transition table (fl_protocol.secagg.client_stages): every pair of stage and
event, the stages a client passes in an honest run, a wrong call that is not a refusal, and the table in
docs/architecture.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fl_protocol.errors import ProtocolError
from fl_protocol.secagg.client_stages import CLIENT_TABLE, ClientEvent, ClientStage
from fl_protocol.secagg.messages import Roster, Survivors
from fl_protocol.secagg.simulate import Simulation
from tests.state_matrix import check_transition_matrix

ROOT = Path(__file__).resolve().parents[2]
DIM, RING_BITS = 8, 16


def test_every_stage_and_event_pair() -> None:
    assert check_transition_matrix(CLIENT_TABLE, ClientEvent) == len(ClientStage) * len(ClientEvent)
    assert CLIENT_TABLE.states() == list(ClientStage)
    assert (CLIENT_TABLE.initial, CLIENT_TABLE.error) == (ClientStage.INIT, ClientStage.ABORTED)
    assert CLIENT_TABLE.terminal == {ClientStage.UNMASKED}


def test_an_honest_client_walks_the_table_in_protocol_order() -> None:
    sim = Simulation(n=4, dimension=DIM, ring_bits=RING_BITS)
    client = sim.clients[sim.node_ids[0]]
    seen = [client.stage]
    for other in sim.clients.values():
        assert sim.server.on_advertise(other.advertise())
    seen.append(client.stage)
    roster = sim.server.close_advertise()
    assert isinstance(roster, Roster)
    for other in sim.clients.values():
        answer = other.on_roster(roster)
        assert answer is not None and sim.server.on_share_keys(answer)
    seen.append(client.stage)
    routed = sim.server.close_share_keys()
    assert isinstance(routed, dict)
    client.on_routed_shares(routed[client.node_id])
    seen.append(client.stage)
    client.mask(np.zeros(DIM, dtype=np.uint32))
    seen.append(client.stage)
    client.on_survivors(Survivors(1, "gw-0", tuple(sim.node_ids)))
    seen.append(client.stage)
    assert seen == [s for s in ClientStage if s not in (ClientStage.UNMASKED, ClientStage.ABORTED)]
    client.advertise()  # the same keys again: the stage is kept
    assert client.stage is ClientStage.SIGNED


def test_mask_in_the_wrong_stage_raises_but_does_not_abort() -> None:
    client = Simulation(n=3, dimension=DIM, ring_bits=RING_BITS).clients["node-000"]
    with pytest.raises(ProtocolError, match="mask\\(\\) not allowed in stage INIT"):
        client.mask(np.zeros(DIM, dtype=np.uint32))
    assert client.stage is ClientStage.INIT
    client.advertise()
    assert client.stage is ClientStage.ADVERTISED


def test_docs_show_the_client_table() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    heading = "## State machine: SecAgg+ client"
    assert heading in text
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    assert CLIENT_TABLE.markdown() in section
