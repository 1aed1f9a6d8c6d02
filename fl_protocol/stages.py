"""The round's vocabulary: its stages and the states nodes report, spelled once for every role.

A round of secure aggregation (docs/secure-aggregation.md) moves through the uplink stages
ADVERTISE → SHARES → MASKED → CONSISTENCY → UNMASK; a trusted-gateway round (docs/robustness.md) has
MASKED only. Each uplink stage is a topic level devices publish under
(`gw/{gw}/round/{r}/{stage}/{device}`) and has a deadline in the round task (`RoundTask.deadlines_ms`,
keyed by the stage's value). The gateway answers on the downlink stages ROSTER, SURVIVORS and
UNMASK_REQUEST. PARTIAL is not a topic level but a deadline: the gateways' partial sums must reach the
cloud before it.

`NodeState` holds the words a node publishes in its retained `Status` message (docs/wire-format.md); the
docs and the status page use the same words.
"""

from __future__ import annotations

from enum import Enum


class Stage(str, Enum):
    """A stage of the round as it appears on a topic level or as a deadline key.

    Values are the wire strings; `Stage("masked")` parses one (ValueError on anything else).
    """

    # device -> gateway: gw/{gw}/round/{r}/{stage}/{device}
    ADVERTISE = "advertise"
    SHARES = "shares"
    MASKED = "masked"
    CONSISTENCY = "consistency"
    UNMASK = "unmask"
    # gateway -> devices: gw/{gw}/round/{r}/{stage}
    ROSTER = "roster"
    SURVIVORS = "survivors"
    UNMASK_REQUEST = "unmask_request"
    # gateway -> cloud: a deadline only (the partial sum travels on its own topic)
    PARTIAL = "partial"


#: The uplink stages of a SecAgg+ round, in protocol order.
SECURE_ROUND_STAGES: tuple[Stage, ...] = (
    Stage.ADVERTISE,
    Stage.SHARES,
    Stage.MASKED,
    Stage.CONSISTENCY,
    Stage.UNMASK,
)
#: The uplink stages of a trusted-gateway round (plain updates, no masking).
TRUSTED_ROUND_STAGES: tuple[Stage, ...] = (Stage.MASKED,)
#: Every stage a round task carries a deadline for (cloud's `[cloud.stage_timeouts_s]`), in order.
DEADLINE_STAGES: tuple[Stage, ...] = (*SECURE_ROUND_STAGES, Stage.PARTIAL)

UPLINK_STAGES = frozenset(SECURE_ROUND_STAGES)
DOWNLINK_STAGES = frozenset({Stage.ROSTER, Stage.SURVIVORS, Stage.UNMASK_REQUEST})
#: Stages that are topic levels (PARTIAL is not).
TOPIC_STAGES = UPLINK_STAGES | DOWNLINK_STAGES


def round_stages(*, trusted: bool) -> tuple[Stage, ...]:
    """The uplink stages of a round, in order: `TRUSTED_ROUND_STAGES` if trusted, else the secure ones."""
    return TRUSTED_ROUND_STAGES if trusted else SECURE_ROUND_STAGES


class NodeState(str, Enum):
    """What a node says it is doing in its retained `Status` (the `state` field's value).

    Device: IDLE, WAITING_MODEL, TRAINING, UPLOADED, SKIPPED, WITHDRAWN (gave a joined round up: deadline,
    abort, refusal, failed training or a restart; docs/device.md); gateway: ONLINE; cloud: RUNNING, DONE,
    FAILED; any node: OFFLINE (also its MQTT last will).
    """

    IDLE = "idle"
    WAITING_MODEL = "waiting_model"
    TRAINING = "training"
    UPLOADED = "uploaded"
    SKIPPED = "skipped"
    WITHDRAWN = "withdrawn"
    ONLINE = "online"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    OFFLINE = "offline"
