"""Rendering of mosquitto.conf and ACL files (the broker behaviour itself: tests/integration)."""

from __future__ import annotations

from fedlora.provision.fleet import Fleet, FleetSettings, NodeRecord
from fedlora.provision.mosquitto_conf import (
    BridgeSpec,
    max_queued_messages_for,
    render_cloud_acl,
    render_conf,
    render_gateway_acl,
)


def _fleet() -> Fleet:
    s = FleetSettings(
        fleet="f",
        cloud_name="cloud",
        cloud_host="cloud.lan",
        cloud_port=8883,
        gateway_port=8884,
        gateway_hosts={},
        valid_days=10,
        max_packet_bytes=4096,
        broker_root="/etc/fl/brokers",
    )
    fleet = Fleet(settings=s)
    fleet.add(NodeRecord(id="cloud", role="cloud"))
    for gw in ("g1", "g2"):
        fleet.add(NodeRecord(id=gw, role="gateway"))
    fleet.add(NodeRecord(id="d1", role="device", gateway="g1"))
    fleet.add(NodeRecord(id="d2", role="device", gateway="g2"))
    fleet.add(NodeRecord(id="d3", role="device", gateway="g1", revoked_at="2026-01-01T00:00:00+00:00"))
    return fleet


def _lines(text: str) -> set[str]:
    return {line for line in text.splitlines() if line and not line.startswith("#")}


def test_gateway_conf_has_tls_acl_limits_persistence_and_bridge() -> None:
    s = _fleet().settings
    conf = _lines(render_conf(s, "g1", port=8884, bridge=BridgeSpec("g1", "cloud.lan", 8883)))
    root = "/etc/fl/brokers/g1"
    assert {
        "allow_anonymous false",
        "listener 8884",
        f"cafile {root}/ca.crt",
        f"certfile {root}/server.crt",
        f"keyfile {root}/server.key",
        f"crlfile {root}/crl.pem",
        "require_certificate true",
        "use_identity_as_username true",
        f"acl_file {root}/acl",
        "max_packet_size 4096",
        "persistence true",
        f"persistence_location {root}/data/",
        "connection g1-to-cloud",
        "address cloud.lan:8883",
        "cleansession false",
        "bridge_protocol_version mqttv311",
        f"bridge_certfile {root}/bridge.crt",
        "topic fl/v1/f/round/+/task in 1",
        "topic fl/v1/f/model/+ in 1",
        "topic fl/v1/f/round/+/task/chunk/+ in 1",
        "topic fl/v1/f/model/+/chunk/+ in 1",
        "topic fl/v1/f/model/+/delta in 1",
        "topic fl/v1/f/model/+/delta/chunk/+ in 1",
        "topic fl/v1/f/round/+/partial/g1 out 1",
        "topic fl/v1/f/status/+ out 1",
        "max_inflight_messages 20",
        f"max_queued_messages {max_queued_messages_for(4096)}",
    } <= conf
    bridged = sorted(line for line in conf if line.startswith("topic "))
    assert [line for line in bridged if "/chunk/" in line] == [
        "topic fl/v1/f/model/+/chunk/+ in 1",
        "topic fl/v1/f/model/+/delta/chunk/+ in 1",
        "topic fl/v1/f/round/+/task/chunk/+ in 1",
    ]  # chunk topics of tasks, models and model deltas come in; nothing else has chunk topics


def test_broker_queue_holds_two_largest_messages_in_chunks() -> None:
    """mosquitto drops QoS 1 messages beyond max_queued_messages: a chunked model must fit in it."""
    from fl_protocol.wire.framing import DEFAULT_MAX_FRAME_BYTES
    from fl_transport.chunking import chunk_count_bound

    assert max_queued_messages_for(32 * 1024 * 1024) == 2 * 3 + 1000
    for limit in (8192, 12_000, 65_536, 1024 * 1024):
        assert max_queued_messages_for(limit) == 2 * chunk_count_bound(DEFAULT_MAX_FRAME_BYTES, limit) + 1000
    assert max_queued_messages_for(12_000) > 2 * DEFAULT_MAX_FRAME_BYTES // 12_000
    conf = render_conf(_fleet().settings, "cloud", port=8883, bridge=None)
    assert f"max_queued_messages {max_queued_messages_for(4096)}" in conf.splitlines()


def test_cloud_conf_has_no_bridge() -> None:
    conf = render_conf(_fleet().settings, "cloud", port=8883, bridge=None)
    assert "connection " not in conf and "listener 8883" in conf


def test_gateway_acl_holds_only_its_active_devices_and_no_patterns() -> None:
    acl = render_gateway_acl(_fleet(), "g1")
    assert "pattern" not in _lines(acl).__repr__()
    users = [line.split()[1] for line in acl.splitlines() if line.startswith("user ")]
    assert users == ["g1", "d1"]  # d2 belongs to g2, d3 is revoked
    assert "topic write fl/v1/f/gw/g1/round/+/+/d1" in acl
    assert "topic read fl/v1/f/gw/g1/inbox/d1" in acl
    d1_block = acl.split("user d1\n")[1]
    assert not [line for line in d1_block.splitlines() if line.startswith("topic write") and "d1" not in line]


def test_cloud_acl_lets_each_gateway_write_only_its_partial_and_site_status() -> None:
    acl = render_cloud_acl(_fleet())
    g1 = acl.split("user g1\n")[1].split("\n\n")[0]
    assert "topic write fl/v1/f/round/+/partial/g1" in g1
    assert "topic write fl/v1/f/status/d1" in g1
    assert "d2" not in g1 and "d3" not in g1 and "partial/+" not in g1
    assert "topic write fl/v1/f/round/+/task" in acl.split("user cloud\n")[1]


def _allowed(acl: str, user: str, access: str, topic: str) -> bool:
    from paho.mqtt.client import topic_matches_sub

    block = acl.split(f"\nuser {user}\n")[1].split("\n\n")[0]
    for line in block.splitlines():
        _, mode, pattern = line.split()
        if mode in (access, "readwrite") and topic_matches_sub(pattern, topic):
            return True
    return False


def test_acls_agree_with_the_protocol_topic_builders() -> None:
    from fl_protocol import topics as t

    fleet = _fleet()
    gw_acl, cloud_acl = render_gateway_acl(fleet, "g1"), render_cloud_acl(fleet)
    for stage in t.UPLINK_STAGES:
        assert _allowed(gw_acl, "d1", "write", t.device_stage_topic("f", "g1", 3, stage, "d1"))
        assert not _allowed(gw_acl, "d1", "write", t.device_stage_topic("f", "g1", 3, stage, "d3"))
        assert _allowed(gw_acl, "g1", "read", t.device_stage_topic("f", "g1", 3, stage, "d1"))
    for stage in t.DOWNLINK_STAGES:
        assert _allowed(gw_acl, "g1", "write", t.gateway_stage_topic("f", "g1", 3, stage))
        assert _allowed(gw_acl, "d1", "read", t.gateway_stage_topic("f", "g1", 3, stage))
    for topic in (t.task_topic("f", 3), t.model_topic("f", 2), t.inbox_topic("f", "g1", "d1")):
        assert _allowed(gw_acl, "d1", "read", topic)
    assert not _allowed(gw_acl, "d1", "read", t.inbox_topic("f", "g1", "d9"))
    assert _allowed(gw_acl, "d1", "write", t.status_topic("f", "d1"))
    assert _allowed(cloud_acl, "g1", "write", t.partial_topic("f", 3, "g1"))
    assert not _allowed(cloud_acl, "g1", "write", t.partial_topic("f", 3, "g2"))
    assert _allowed(cloud_acl, "cloud", "read", t.partial_topic("f", 3, "g2"))
    assert _allowed(cloud_acl, "cloud", "write", t.task_topic("f", 3))


def test_acls_grant_chunk_topics_exactly_where_task_and_model_topics_are_granted() -> None:
    from fl_protocol import topics as t

    fleet = _fleet()
    acls = {"gw": render_gateway_acl(fleet, "g1"), "cloud": render_cloud_acl(fleet)}
    cases = [("gw", user) for user in ("g1", "d1")] + [("cloud", user) for user in ("cloud", "g1")]
    bases = [t.task_topic("f", 3), t.model_topic("f", 2), t.model_delta_topic("f", 2)]
    for acl, user in cases:
        for access in ("read", "write"):
            for base in bases:
                chunk = t.retained_chunk_topic(base, 17)
                assert _allowed(acls[acl], user, access, chunk) == _allowed(acls[acl], user, access, base)
    assert _allowed(acls["cloud"], "cloud", "write", t.retained_chunk_topic(bases[1], 0))
    assert _allowed(acls["gw"], "d1", "read", t.retained_chunk_topic(bases[1], 0))
    assert not _allowed(acls["gw"], "d1", "write", t.retained_chunk_topic(bases[1], 0))
    chunk_lines = [line for text in acls.values() for line in text.splitlines() if "/chunk/" in line]
    assert chunk_lines and all(
        line.endswith(("/round/+/task/chunk/+", "/model/+/chunk/+", "/model/+/delta/chunk/+"))
        for line in chunk_lines
    ), "no topic but tasks, models and model deltas has chunk topics"


def test_model_deltas_travel_wherever_full_models_do() -> None:
    """The cloud writes `model/{v}/delta`, the bridge carries it in, gateways and devices read it."""
    from fl_protocol import topics as t

    fleet = _fleet()
    acls = {"gw": render_gateway_acl(fleet, "g1"), "cloud": render_cloud_acl(fleet)}
    model, delta = t.model_topic("f", 2), t.model_delta_topic("f", 2)
    for acl, user in [("gw", "g1"), ("gw", "d1"), ("cloud", "cloud"), ("cloud", "g1")]:
        for access in ("read", "write"):
            assert _allowed(acls[acl], user, access, delta) == _allowed(acls[acl], user, access, model)
    assert _allowed(acls["cloud"], "cloud", "write", delta) and _allowed(acls["gw"], "d1", "read", delta)
    assert not _allowed(acls["gw"], "d1", "write", delta)
    bridge = render_conf(
        fleet.settings, "g1", port=8884, bridge=BridgeSpec("g1", "cloud.lan", 8883)
    ).splitlines()
    assert "topic fl/v1/f/model/+/delta in 1" in bridge
