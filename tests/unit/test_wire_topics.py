"""MQTT topics of docs/wire-format.md, "Topics": building, parsing, id validation."""

from __future__ import annotations

import pytest

from fl_protocol import topics
from fl_protocol.errors import ConfigError, DecodeError
from fl_protocol.topics import Stage, Topic, TopicKind


def test_topics_follow_the_design_table() -> None:
    assert topics.task_topic("f1", 3) == "fl/v1/f1/round/3/task"
    assert topics.model_topic("f1", 12) == "fl/v1/f1/model/12"
    assert (
        topics.device_stage_topic("f1", "gw-1", 3, Stage.MASKED, "dev-7")
        == "fl/v1/f1/gw/gw-1/round/3/masked/dev-7"
    )
    assert topics.gateway_stage_topic("f1", "gw-1", 3, "roster") == "fl/v1/f1/gw/gw-1/round/3/roster"
    assert topics.inbox_topic("f1", "gw-1", "dev-7") == "fl/v1/f1/gw/gw-1/inbox/dev-7"
    assert topics.partial_topic("f1", 3, "gw-1") == "fl/v1/f1/round/3/partial/gw-1"
    assert topics.status_topic("f1", "dev-7") == "fl/v1/f1/status/dev-7"
    assert topics.gateway_uplink_filter("f1", "gw-1") == "fl/v1/f1/gw/gw-1/round/+/+/+"
    assert topics.cloud_partial_filter("f1") == "fl/v1/f1/round/+/partial/+"
    assert "fl/v1/f1/gw/gw-1/inbox/dev-7" in topics.device_downlink_filters("f1", "gw-1", "dev-7")


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("fl/v1/f/round/3/task", Topic(TopicKind.TASK, "f", round_id=3)),
        ("fl/v1/f/model/0", Topic(TopicKind.MODEL, "f", model_version=0)),
        ("fl/v1/f/model/7/delta", Topic(TopicKind.MODEL_DELTA, "f", model_version=7)),
        (
            "fl/v1/f/gw/g/round/9/unmask/d",
            Topic(TopicKind.DEVICE_STAGE, "f", round_id=9, gateway="g", stage=Stage.UNMASK, device="d"),
        ),
        (
            "fl/v1/f/gw/g/round/9/survivors",
            Topic(TopicKind.GATEWAY_STAGE, "f", round_id=9, gateway="g", stage=Stage.SURVIVORS),
        ),
        ("fl/v1/f/gw/g/inbox/d", Topic(TopicKind.INBOX, "f", gateway="g", device="d")),
        ("fl/v1/f/round/2/partial/g", Topic(TopicKind.PARTIAL, "f", round_id=2, gateway="g")),
        ("fl/v1/f/status/n.1", Topic(TopicKind.STATUS, "f", node="n.1")),
    ],
)
def test_parse(topic: str, expected: Topic) -> None:
    assert topics.parse_topic(topic) == expected


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "fl/v2/f/round/1/task",
        "fl/v1/f/round/01/task",  # non-canonical number
        "fl/v1/f/round/-1/task",
        "fl/v1/f/round/1/task/extra",
        "fl/v1/f/model/1/deltas",
        "fl/v1/f/model/1/delta/extra",
        "fl/v1/f/gw/g/round/1/masked",  # uplink stage without a device
        "fl/v1/f/gw/g/round/1/roster/d",  # downlink stage with a device
        "fl/v1/f/gw/g/round/1/bogus/d",
        "fl/v1/+/status/n",
        "fl/v1/f/status/#",
        "fl/v1/f/status/",
        "fl/v1/f/status/" + "n" * 65,
    ],
)
def test_parse_rejects(topic: str) -> None:
    with pytest.raises(DecodeError, match="invalid message"):
        topics.parse_topic(topic)


@pytest.mark.parametrize("bad", ["", "a+b", "a#", "a/b", "$SYS", "a b", "x" * 65, "é", "a\x00"])
def test_invalid_ids_are_refused_when_building(bad: str) -> None:
    assert not topics.is_valid_id(bad)
    with pytest.raises(ConfigError, match=r"node must match \[A-Za-z0-9_\.-\]\{1,64\}"):
        topics.status_topic("fleet", bad)
    with pytest.raises(ConfigError, match=r"fleet must match \[A-Za-z0-9_\.-\]\{1,64\}"):
        topics.task_topic(bad, 1)


def test_invalid_numbers_and_stages_are_refused() -> None:
    with pytest.raises(ConfigError, match="round_id must be a non-negative int below 1e19"):
        topics.task_topic("f", -1)
    with pytest.raises(ConfigError, match="round_id must be a non-negative int below 1e19"):
        topics.task_topic("f", True)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="stage roster is not valid in this direction"):
        topics.device_stage_topic("f", "g", 1, Stage.ROSTER, "d")
    with pytest.raises(ConfigError, match="unknown stage 'nope'"):
        topics.gateway_stage_topic("f", "g", 1, "nope")


def test_every_built_topic_parses_back() -> None:
    for stage in topics.UPLINK_STAGES:
        parsed = topics.parse_topic(topics.device_stage_topic("f", "g", 4, stage, "d"))
        assert (parsed.stage, parsed.device, parsed.round_id) == (stage, "d", 4)
    for stage in topics.DOWNLINK_STAGES:
        assert topics.parse_topic(topics.gateway_stage_topic("f", "g", 4, stage)).stage == stage


def test_retained_chunk_topics_exist_for_task_and_model_topics_only() -> None:
    task, model = topics.task_topic("f", 3), topics.model_topic("f", 7)
    assert topics.retained_chunk_topic(task, 0) == "fl/v1/f/round/3/task/chunk/0"
    assert topics.retained_chunk_topic(model, 12) == "fl/v1/f/model/7/chunk/12"
    assert topics.has_retained_chunk_topics(task) and topics.has_retained_chunk_topics(model)
    for other in (topics.status_topic("f", "d"), topics.partial_topic("f", 3, "g"), "t/big", ""):
        assert not topics.has_retained_chunk_topics(other)
        with pytest.raises(ConfigError, match="only task and model topics"):
            topics.retained_chunk_topic(other, 0)
    with pytest.raises(ConfigError, match="chunk index"):
        topics.retained_chunk_topic(model, -1)


def test_retained_chunk_topics_parse_back_and_are_not_protocol_topics() -> None:
    for base in (topics.task_topic("f", 3), topics.model_topic("f", 7)):
        for index in (0, 1, 16_383):
            chunk_topic = topics.retained_chunk_topic(base, index)
            assert topics.is_retained_chunk_topic(chunk_topic)
            assert topics.parse_retained_chunk_topic(chunk_topic) == (base, index)
            with pytest.raises(DecodeError, match="invalid message"):
                topics.parse_topic(chunk_topic)  # roles never see a chunk topic


@pytest.mark.parametrize(
    "topic",
    [
        "fl/v1/f/status/d/chunk/0",  # status has no chunk topics
        "fl/v1/f/round/3/partial/g/chunk/0",
        "fl/v1/f/model/7/chunk/01",  # non-canonical index
        "fl/v1/f/model/7/chunk/-1",
        "fl/v1/f/model/7/chunk/+",
        "fl/v1/f/model/7/chunk/",
        "fl/v1/f/model/x/chunk/0",
        "fl/v1/f/model/7/chunks/0",
        "fl/v1/f/model/7/chunk/0/1",
        "chunk/0",
    ],
)
def test_parse_retained_chunk_topic_rejects(topic: str) -> None:
    with pytest.raises(DecodeError, match="invalid message"):
        topics.parse_retained_chunk_topic(topic)


def test_ordinary_topics_are_not_taken_for_chunk_topics() -> None:
    built = [
        topics.task_topic("f", 3),
        topics.model_topic("f", 7),
        topics.model_delta_topic("f", 7),
        topics.status_topic("f", "chunk"),
        topics.inbox_topic("f", "chunk", "chunk"),
        topics.partial_topic("f", 3, "chunk"),
        topics.gateway_stage_topic("f", "chunk", 3, "roster"),
        *(topics.device_stage_topic("f", "chunk", 3, stage, "chunk") for stage in topics.UPLINK_STAGES),
    ]
    assert not any(topics.is_retained_chunk_topic(topic) for topic in built)


def test_retained_chunk_filter_follows_task_and_model_filters() -> None:
    assert topics.retained_chunk_filter(topics.task_filter("f")) == "fl/v1/f/round/+/task/chunk/+"
    assert topics.retained_chunk_filter("fl/v1/f/model/+") == "fl/v1/f/model/+/chunk/+"
    assert topics.retained_chunk_filter("fl/v1/+/model/3") == "fl/v1/+/model/3/chunk/+"
    assert topics.retained_chunk_filter(topics.model_delta_filter("f")) == "fl/v1/f/model/+/delta/chunk/+"
    delta = topics.model_delta_topic("f", 4)
    assert topics.parse_retained_chunk_topic(topics.retained_chunk_topic(delta, 2)) == (delta, 2)
    assert topics.retained_chunk_filter(topics.task_topic("f", 3)) == "fl/v1/f/round/3/task/chunk/+"
    for other in (
        topics.status_filter("f"),
        topics.cloud_partial_filter("f"),
        topics.gateway_uplink_filter("f", "g"),
        "fl/v1/f/#",  # already matches the chunk topics
        "fl/v1/f/model/#",
        "fl/v1/f/model/x",
        "t/#",
    ):
        assert topics.retained_chunk_filter(other) is None
    for topic_filter in topics.device_downlink_filters("f", "g", "d"):
        chunk_filter = topics.retained_chunk_filter(topic_filter)
        assert chunk_filter is None or chunk_filter == f"{topic_filter}/chunk/+"


def test_a_device_subscribes_to_model_deltas_before_tasks_and_not_to_full_models() -> None:
    filters = topics.device_downlink_filters("f", "g", "d")
    assert topics.model_delta_topic("f", 3) == "fl/v1/f/model/3/delta"
    assert filters.index("fl/v1/f/model/+/delta") < filters.index("fl/v1/f/round/+/task")
    assert "fl/v1/f/model/+" not in filters  # a full model only when needed (edge_runtime/agent/models.py)
