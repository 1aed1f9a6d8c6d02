"""MQTT topics of docs/wire-format.md, "Topics", built and parsed in one place.

Every topic lives under `fl/v1/{fleet}`. Identifiers (fleet, gateway, device, node) are restricted to
`[A-Za-z0-9_.-]`, 1..64 characters: no MQTT wildcard (`+`, `#`), no level separator (`/`), no `$` prefix,
no whitespace or control characters, so a peer cannot smuggle a wildcard or an extra level into a topic that
an ACL pattern on `%u` is meant to pin down.

Building with an invalid id is a `ConfigError` (ids come from configuration); parsing a topic received from
the broker that does not match the table is a `DecodeError`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from enum import Enum

from fl_protocol.errors import ConfigError, DecodeError
from fl_protocol.stages import DOWNLINK_STAGES, UPLINK_STAGES, Stage

logger = logging.getLogger(__name__)

PROTOCOL_PREFIX = "fl/v1"
MAX_ID_CHARS = 64
_ID_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_INT_RE = re.compile(r"0|[1-9][0-9]{0,18}")


class TopicKind(str, Enum):
    """Which row of the topic table (docs/wire-format.md) a topic belongs to."""

    TASK = "task"
    MODEL = "model"
    MODEL_DELTA = "model_delta"
    DEVICE_STAGE = "device_stage"
    GATEWAY_STAGE = "gateway_stage"
    INBOX = "inbox"
    PARTIAL = "partial"
    ABORT = "abort"
    STATUS = "status"


@dataclass(frozen=True)
class Topic:
    """A parsed topic; fields that the topic kind does not carry are None."""

    kind: TopicKind
    fleet: str
    round_id: int | None = None
    model_version: int | None = None
    gateway: str | None = None
    stage: Stage | None = None
    device: str | None = None
    node: str | None = None


def is_valid_id(value: object) -> bool:
    """True if `value` is a str usable as a topic level and node identity (see module docstring)."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def validate_id(value: object, what: str = "id") -> str:
    """Return `value` if it is a valid identifier, else raise ConfigError naming `what`."""
    if not is_valid_id(value):
        raise ConfigError(f"{what} must match [A-Za-z0-9_.-]{{1,{MAX_ID_CHARS}}}")
    return value  # type: ignore[return-value]


def _number(value: object, what: str) -> str:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value >= 10**19:
        raise ConfigError(f"{what} must be a non-negative int below 1e19")
    return str(value)


def _stage(stage: Stage | str, allowed: frozenset[Stage]) -> str:
    try:
        parsed = Stage(stage)
    except ValueError:
        raise ConfigError(f"unknown stage {stage!r}") from None
    if parsed not in allowed:
        raise ConfigError(f"stage {parsed.value} is not valid in this direction")
    return parsed.value


def fleet_prefix(fleet: str) -> str:
    """`fl/v1/{fleet}`: the root of every topic of one fleet."""
    return f"{PROTOCOL_PREFIX}/{validate_id(fleet, 'fleet')}"


def task_topic(fleet: str, round_id: int) -> str:
    """`round/{r}/task` (retained): the signed round task, cloud -> gateways -> devices."""
    return f"{fleet_prefix(fleet)}/round/{_number(round_id, 'round_id')}/task"


def model_topic(fleet: str, model_version: int) -> str:
    """`model/{version}` (retained): the zstd-compressed global LoRA vector of one version."""
    return f"{fleet_prefix(fleet)}/model/{_number(model_version, 'model_version')}"


def model_delta_topic(fleet: str, model_version: int) -> str:
    """`model/{version}/delta` (retained): the version as a quantized delta from the version before it
    (`GlobalModelDelta`, docs/update-codec.md "Downlink"), next to the full `model/{version}`."""
    return f"{model_topic(fleet, model_version)}/delta"


def device_stage_topic(fleet: str, gateway: str, round_id: int, stage: Stage | str, device: str) -> str:
    """`gw/{gw}/round/{r}/{stage}/{device}`: a device's message of one SecAgg stage to its gateway."""
    return (
        f"{fleet_prefix(fleet)}/gw/{validate_id(gateway, 'gateway')}/round/{_number(round_id, 'round_id')}"
        f"/{_stage(stage, UPLINK_STAGES)}/{validate_id(device, 'device')}"
    )


def gateway_stage_topic(fleet: str, gateway: str, round_id: int, stage: Stage | str) -> str:
    """`gw/{gw}/round/{r}/{stage}`: gateway broadcast to its cohort (roster, survivors, unmask request)."""
    return (
        f"{fleet_prefix(fleet)}/gw/{validate_id(gateway, 'gateway')}/round/{_number(round_id, 'round_id')}"
        f"/{_stage(stage, DOWNLINK_STAGES)}"
    )


def inbox_topic(fleet: str, gateway: str, device: str) -> str:
    """`gw/{gw}/inbox/{device}`: messages routed by the gateway to one device (encrypted shares)."""
    return f"{fleet_prefix(fleet)}/gw/{validate_id(gateway, 'gateway')}/inbox/{validate_id(device, 'device')}"


def partial_topic(fleet: str, round_id: int, gateway: str) -> str:
    """`round/{r}/partial/{gw}`: a gateway's partial aggregate to the cloud."""
    gw = validate_id(gateway, "gateway")
    return f"{fleet_prefix(fleet)}/round/{_number(round_id, 'round_id')}/partial/{gw}"


def abort_topic(fleet: str, round_id: int, gateway: str) -> str:
    """`round/{r}/abort/{gw}`: a gateway's signed Abort to the cloud (bridged like the partial), so the
    cloud closes the round as soon as every gateway reported a partial or an abort."""
    gw = validate_id(gateway, "gateway")
    return f"{fleet_prefix(fleet)}/round/{_number(round_id, 'round_id')}/abort/{gw}"


def status_topic(fleet: str, node: str) -> str:
    """`status/{node}` (retained, also the last will): a node's state."""
    return f"{fleet_prefix(fleet)}/status/{validate_id(node, 'node')}"


def gateway_uplink_filter(fleet: str, gateway: str) -> str:
    """Subscription filter for everything devices send to `gateway` (all rounds, stages, devices)."""
    return f"{fleet_prefix(fleet)}/gw/{validate_id(gateway, 'gateway')}/round/+/+/+"


def device_downlink_filters(fleet: str, gateway: str, device: str) -> list[str]:
    """Subscription filters of a device: its gateway's broadcasts, its inbox, the model deltas, then the
    tasks (in this order: a retained delta reaches a subscriber before the retained task that needs it).

    Full models (`model/{v}`) are not among them: a device subscribes to the one it needs when it cannot
    build it from a delta, and unsubscribes once it arrived (docs/device.md, "Lifecycle of a round").
    """
    prefix = fleet_prefix(fleet)
    gw = validate_id(gateway, "gateway")
    return [
        f"{prefix}/gw/{gw}/round/+/+",
        inbox_topic(fleet, gateway, device),
        model_delta_filter(fleet),
        f"{prefix}/round/+/task",
    ]


def model_delta_filter(fleet: str) -> str:
    """Subscription filter for the model deltas of every version."""
    return f"{fleet_prefix(fleet)}/model/+/delta"


def task_filter(fleet: str) -> str:
    """Subscription filter for the round tasks of every round."""
    return f"{fleet_prefix(fleet)}/round/+/task"


def status_filter(fleet: str) -> str:
    """Subscription filter for every node's status."""
    return f"{fleet_prefix(fleet)}/status/+"


def cloud_partial_filter(fleet: str) -> str:
    """Subscription filter for the partial aggregates of every gateway and round."""
    return f"{fleet_prefix(fleet)}/round/+/partial/+"


def cloud_abort_filter(fleet: str) -> str:
    """Subscription filter for the aborts of every gateway and round."""
    return f"{fleet_prefix(fleet)}/round/+/abort/+"


def parse_topic(topic: str) -> Topic:
    """Parse a topic of the docs/wire-format.md table; anything else (or an invalid id) raises DecodeError."""
    try:
        return _parse(topic.split("/"))
    except (ConfigError, ValueError, AttributeError) as exc:
        logger.debug("unparseable topic: %s", exc)
        raise DecodeError() from None


def _int(level: str) -> int:
    if _INT_RE.fullmatch(level) is None:
        raise ValueError("not a canonical non-negative integer")
    return int(level)


def _parse(levels: list[str]) -> Topic:
    if len(levels) < 4 or "/".join(levels[:2]) != PROTOCOL_PREFIX:
        raise ValueError("wrong prefix")
    fleet = validate_id(levels[2], "fleet")
    rest = levels[3:]
    match rest:
        case ["round", r, "task"]:
            return Topic(TopicKind.TASK, fleet, round_id=_int(r))
        case ["round", r, "partial", gw]:
            return Topic(TopicKind.PARTIAL, fleet, round_id=_int(r), gateway=validate_id(gw))
        case ["round", r, "abort", gw]:
            return Topic(TopicKind.ABORT, fleet, round_id=_int(r), gateway=validate_id(gw))
        case ["model", version]:
            return Topic(TopicKind.MODEL, fleet, model_version=_int(version))
        case ["model", version, "delta"]:
            return Topic(TopicKind.MODEL_DELTA, fleet, model_version=_int(version))
        case ["status", node]:
            return Topic(TopicKind.STATUS, fleet, node=validate_id(node))
        case ["gw", gw, "inbox", device]:
            return Topic(TopicKind.INBOX, fleet, gateway=validate_id(gw), device=validate_id(device))
        case ["gw", gw, "round", r, stage]:
            _stage(stage, DOWNLINK_STAGES)
            return Topic(
                TopicKind.GATEWAY_STAGE, fleet, round_id=_int(r), gateway=validate_id(gw), stage=Stage(stage)
            )
        case ["gw", gw, "round", r, stage, device]:
            _stage(stage, UPLINK_STAGES)
            return Topic(
                TopicKind.DEVICE_STAGE,
                fleet,
                round_id=_int(r),
                gateway=validate_id(gw),
                stage=Stage(stage),
                device=validate_id(device),
            )
    raise ValueError("no matching topic pattern")


# -- retained chunk topics (docs/transport.md, "Retained chunks") ------------------------------------------
# A retained message larger than the broker's packet limit cannot sit on its own topic (the broker keeps one
# message per topic: the last chunk). Its chunks are retained one per sub-topic `{topic}/chunk/{i}`, so a
# subscriber that arrives later still finds every chunk. Only the task and model (and model delta) topics
# have them: the
# status topic is also the last will's topic, which the broker fills with one packet of its own.

CHUNK_LEVEL = "chunk"
RETAINED_CHUNK_KINDS = frozenset({TopicKind.TASK, TopicKind.MODEL, TopicKind.MODEL_DELTA})


def has_retained_chunk_topics(topic: str) -> bool:
    """True if `topic` is a task, model or model delta topic: one whose retained message may travel in
    chunk topics."""
    try:
        return parse_topic(topic).kind in RETAINED_CHUNK_KINDS
    except DecodeError:
        return False


def retained_chunk_topic(topic: str, index: int) -> str:
    """`{topic}/chunk/{index}` (retained): chunk `index` (0-based) of the retained message of `topic`.

    ConfigError if `topic` is not a task or model topic, or `index` is not a non-negative int below 1e19.
    """
    if not has_retained_chunk_topics(topic):
        raise ConfigError("only task and model topics have retained chunk topics")
    return f"{topic}/{CHUNK_LEVEL}/{_number(index, 'chunk index')}"


def is_retained_chunk_topic(topic: str) -> bool:
    """True if `topic` ends in `/chunk/{i}` (a cheap test; `parse_retained_chunk_topic` checks the rest)."""
    levels = topic.split("/")
    return len(levels) > 2 and levels[-2] == CHUNK_LEVEL


def parse_retained_chunk_topic(topic: str) -> tuple[str, int]:
    """(message topic, chunk index) of a retained chunk topic; DecodeError for anything else."""
    base, _, index = topic.rpartition("/")
    base, _, level = base.rpartition("/")
    try:
        if level != CHUNK_LEVEL or not has_retained_chunk_topics(base):
            raise ValueError("not a chunk topic of a task or model topic")
        return base, _int(index)
    except ValueError as exc:
        logger.debug("unparseable chunk topic: %s", exc)
        raise DecodeError() from None


def retained_chunk_filter(topic_filter: str) -> str | None:
    """`{topic_filter}/chunk/+` if `topic_filter` matches task or model topics, else None.

    A subscriber to task or model topics also subscribes to this filter to receive retained messages that
    needed chunks. `topic_filter` may hold `+` in the fleet, round and version levels; a filter ending in
    `#` already matches the chunk topics (None).
    """
    levels = topic_filter.split("/")
    if len(levels) < 4 or "/".join(levels[:2]) != PROTOCOL_PREFIX:
        return None
    if levels[2] != "+" and not is_valid_id(levels[2]):
        return None
    match levels[3:]:
        case ["round", number, "task"] | ["model", number] | ["model", number, "delta"]:
            if number == "+" or _INT_RE.fullmatch(number) is not None:
                return f"{topic_filter}/{CHUNK_LEVEL}/+"
    return None
