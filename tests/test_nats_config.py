"""The NATS cluster's configuration, the JetStream subject mapping and the devices' failover list (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hub.jetstream_config import JetStreamSettings, stream_subjects, subject_of, topic_of
from vigie import wire
from vigie.mqtt import BrokerConfig
from vigie.nats_cluster import NatsUser, plan_cluster, render_node


def test_each_node_routes_to_the_others_only(tmp_path: Path) -> None:
    cluster = plan_cluster(tmp_path, 3)
    for node in cluster.nodes:
        conf = render_node(cluster, node)
        assert f'server_name: "{node.server_name}"' in conf  # NATS's MQTT needs it
        assert f'listen: "127.0.0.1:{node.mqtt_port}"' in conf
        assert f'store_dir: "{node.store_dir}"' in conf
        routes = [f"nats-route://127.0.0.1:{n.cluster_port}" for n in cluster.nodes]
        own = f"nats-route://127.0.0.1:{node.cluster_port}"
        assert own not in conf.split("routes:")[1]
        assert all(r in conf for r in routes if r != own)
        assert "stream_replicas: 3" in conf


def test_a_single_node_has_no_cluster_block(tmp_path: Path) -> None:
    cluster = plan_cluster(tmp_path, 1)
    conf = render_node(cluster, cluster.nodes[0])
    assert "cluster {" not in conf
    assert "stream_replicas: 1" in conf


def test_users_get_their_permissions(tmp_path: Path) -> None:
    device = NatsUser(
        user="s/d", password="pw", publish=("vigie.v1.s.d.event",), subscribe=("vigie.v1.s.d.receipt",)
    )
    cluster = plan_cluster(tmp_path, 3, users=(device,))
    conf = render_node(cluster, cluster.nodes[0])
    assert '{user: "s/d", password: "pw", permissions: {publish: ["vigie.v1.s.d.event"], ' in conf
    assert 'subscribe: ["vigie.v1.s.d.receipt"]' in conf
    assert "jetstream: enabled" in conf


def test_subjects_and_topics_map_both_ways() -> None:
    topic = wire.topic("vieux-port", "cam-1", wire.Channel.RECEIPT)
    assert subject_of(topic) == "vigie.v1.vieux-port.cam-1.receipt"
    assert topic_of(subject_of(topic)) == topic
    # Receipts, OTA and commands never enter the ingest's stream.
    subjects = stream_subjects()
    assert subjects == ["vigie.v1.*.*.event", "vigie.v1.*.*.heartbeat", "vigie.v1.*.*.status"]


def test_jetstream_settings_refuse_a_bad_stream_name() -> None:
    with pytest.raises(ValidationError, match="stream"):
        JetStreamSettings(stream="has space")


def test_failover_addresses_are_checked_and_ordered() -> None:
    broker = BrokerConfig(host="10.0.0.1", port=1883, failover=("10.0.0.2:1883", "node-3:8883"))
    assert broker.addresses() == [("10.0.0.1", 1883), ("10.0.0.2", 1883), ("node-3", 8883)]
    with pytest.raises(ValidationError, match=r"'10\.0\.0\.2' is not host:port"):
        BrokerConfig(failover=("10.0.0.2",))
    with pytest.raises(ValidationError, match="not host:port"):
        BrokerConfig(failover=("h:99999",))
