"""What the device hears, verified and decoded (docs/device.md): tasks signed by the cloud, stage messages
and routed shares signed by its gateway, and their delivery to the round (global models and their deltas:
edge_runtime.agent.models).

A task that fails its checks is logged and dropped here (None). A gateway message that fails
raises: DecodeError (malformed, unsigned, not from the gateway) or ProtocolError (the round in the topic
and in the message differ); the event loop logs both and goes on.
"""

from __future__ import annotations

import logging
from typing import TypeVar

from edge_runtime.agent.round_api import Action, RoundVariant
from fl_protocol.errors import DecodeError, ProtocolError
from fl_protocol.identity import NodeIdentity
from fl_protocol.message_types import MessageType
from fl_protocol.secagg import Abort, Roster, RoutedShares, Survivors, UnmaskRequest
from fl_protocol.topics import Stage, Topic
from fl_protocol.wire.framing import peek_header
from fl_protocol.wire.messages import RoundTask

logger = logging.getLogger(__name__)

GatewayMessage = Abort | Roster | Survivors | UnmaskRequest
_T = TypeVar("_T")


def decode_task(identity: NodeIdentity, topic: Topic, payload: bytes, *, cloud_id: str) -> RoundTask | None:
    """The round task on `round/{r}/task`, or None (logged) if not signed by the cloud or inconsistent."""
    try:
        header, task = identity.decode(payload, RoundTask, senders={cloud_id})
    except DecodeError:
        logger.warning(
            "ignored task for round %s: malformed, unsigned or not signed by %s", topic.round_id, cloud_id
        )
        return None
    if not header.round_id == topic.round_id == task.round_id:
        logger.warning("ignored task: round in topic, frame and task differ")
        return None
    return task


def decode_gateway_message(
    identity: NodeIdentity, topic: Topic, payload: bytes, *, gateway: str
) -> GatewayMessage:
    """The message on `gw/{gw}/round/{r}/{stage}`: an Abort (on the roster topic), Roster, Survivors or
    UnmaskRequest; raises DecodeError or ProtocolError (module doc)."""
    message: GatewayMessage
    if topic.stage is Stage.ROSTER and peek_header(payload).message_type is MessageType.ABORT:
        message = _from_gateway(identity, payload, Abort, gateway)
    elif topic.stage is Stage.ROSTER:
        message = _from_gateway(identity, payload, Roster, gateway)
    elif topic.stage is Stage.SURVIVORS:
        message = _from_gateway(identity, payload, Survivors, gateway)
    else:  # a device's gateway-stage topics carry the downlink stages only (fl_protocol.topics)
        message = _from_gateway(identity, payload, UnmaskRequest, gateway)
    check_round(topic, message.round_id)
    return message


def decode_routed_shares(identity: NodeIdentity, payload: bytes, *, gateway: str) -> RoutedShares:
    """The shares the gateway routed to this device's inbox; raises DecodeError (module doc)."""
    return _from_gateway(identity, payload, RoutedShares, gateway)


def deliver(current: RoundVariant, message: GatewayMessage) -> list[Action]:
    """Hand a decoded gateway message to the round; returns its actions."""
    if isinstance(message, Abort):
        return current.on_abort(message.reason)
    if isinstance(message, Roster):
        return current.on_roster(message)
    if isinstance(message, Survivors):
        return current.on_survivors(message)
    return current.on_unmask_request(message)


def _from_gateway(identity: NodeIdentity, payload: bytes, kind: type[_T], gateway: str) -> _T:
    # SecAgg+ messages' from_fields takes a dict, not the Mapping fl_protocol.wire.envelope.WireMessage
    # declares, so they do not meet the decoder's type bound (the decoding itself is the same).
    _, message = identity.decode(payload, kind, senders={gateway})  # type: ignore[type-var]
    return message


def check_round(topic: Topic, message_round: int) -> None:
    """ProtocolError if the round in the topic and in the message differ."""
    if topic.round_id != message_round:
        raise ProtocolError("round in topic and message differ")
