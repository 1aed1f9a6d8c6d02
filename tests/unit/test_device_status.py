"""The device's status words are `fl_protocol.stages.NodeState` values (edge_runtime.agent.status)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_runtime.agent.status import StatusPublisher
from fl_protocol.identity import NodeIdentity
from fl_protocol.stages import NodeState
from fl_protocol.wire.messages import Status


def test_status_and_last_will_carry_node_state_words() -> None:
    key = Ed25519PrivateKey.generate()
    identity = NodeIdentity("dev-a", "f", key, {"dev-a": key.public_key()})
    publisher = StatusPublisher(identity, "f", lambda: 5, "ort")
    frame = publisher.encode(NodeState.WITHDRAWN, "masked deadline passed", round=3, ok=True)
    assert publisher.last == Status(
        "dev-a", "withdrawn", "masked deadline passed", 5, {"backend": "ort", "round": 3, "ok": 1}
    )
    assert identity.decode(frame, Status, senders={"dev-a"})[1] == publisher.last
    will = publisher.will()
    _, last_will = identity.decode(will.payload, Status, senders={"dev-a"})
    assert (last_will.state, last_will.reason, will.retain) == (
        NodeState.OFFLINE.value,
        "connection lost",
        True,
    )
