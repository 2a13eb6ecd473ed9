"""The NATS cluster's configuration, the JetStream subject mapping and the devices' failover list (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hub.jetstream_config import JetStreamSettings, stream_subjects, subject_of, topic_of
from vigie import wire
from vigie.exceptions import WireError
from vigie.mqtt import BrokerConfig
from vigie.nats_cluster import (
    NatsCluster,
    NatsTls,
    NatsUser,
    cluster_users,
    device_user,
    hub_user,
    plan_cluster,
    render_node,
)


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


def test_tls_maps_device_certificates_on_mqtt_and_asks_the_hub_for_its_password(tmp_path: Path) -> None:
    tls = NatsTls.from_ca_folder(tmp_path / "ca")
    users = cluster_users([("port", "cam-2"), ("port", "cam-1"), ("port", "cam-1")], hub_user("hub", "pw"))
    cluster = plan_cluster(tmp_path, 3, users=users, tls=tls)
    conf = render_node(cluster, cluster.nodes[0])
    mqtt = conf.split("mqtt {")[1].split("\n}\n")[0]
    assert "verify_and_map: true" in mqtt
    assert f'ca_file: "{tmp_path / "ca" / "ca.crt"}"' in mqtt
    # The client port has TLS too, without a certificate check: the hub logs in with its password.
    top = conf.replace(mqtt, "")
    assert f'cert_file: "{tmp_path / "ca" / "broker.crt"}"' in top
    assert "verify_and_map" not in top
    assert [u.user for u in users] == ["hub", "urn:vigie:device:port:cam-1", "urn:vigie:device:port:cam-2"]
    assert (
        '{user: "urn:vigie:device:port:cam-1", permissions: {publish: ["vigie.v1.port.cam-1.event", ' in conf
    )
    assert 'allowed_connection_types: ["MQTT"]}' in conf
    assert '{user: "hub", password: "pw", ' in conf
    assert 'allowed_connection_types: ["STANDARD"]}' in conf
    assert cluster.urls[0].startswith("tls://")


def test_a_device_user_reaches_its_own_subjects_only() -> None:
    user = device_user("port", "cam-1")
    assert user.password is None
    assert user.connection_types == ("MQTT",)
    assert set(user.publish) == {
        subject_of(wire.topic("port", "cam-1", c))
        for c in (wire.Channel.EVENT, wire.Channel.HEARTBEAT, wire.Channel.STATUS, wire.Channel.OTA_STATE)
    }
    own = {
        subject_of(wire.topic("port", "cam-1", c))
        for c in (wire.Channel.RECEIPT, wire.Channel.OTA, wire.Channel.CMD)
    }
    # $MQTT.sub.>: where NATS delivers a QoS 1 subscription (measured: without it, SUBACK 0x80).
    assert set(user.subscribe) == own | {"$MQTT.sub.>"}
    assert not any("*" in s or s.startswith("vigie.v1.>") for s in (*user.publish, *user.subscribe))
    # A dot would be a subject level of its own: refused like on the wire.
    with pytest.raises(WireError, match=r"'cam\.1' is not a slug"):
        device_user("port", "cam.1")


def test_a_user_without_password_needs_tls_and_mqtt_only(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"'urn:vigie:device:port:cam-1' has no password.*tls"):
        plan_cluster(tmp_path, 1, users=(device_user("port", "cam-1"),))
    sneaky = NatsUser(user="nobody", connection_types=("MQTT", "STANDARD"))
    with pytest.raises(ValidationError, match="connection_types"):
        plan_cluster(tmp_path, 1, users=(sneaky,), tls=NatsTls.from_ca_folder(tmp_path))


def test_a_reload_with_a_refused_user_list_changes_nothing(tmp_path: Path) -> None:
    cluster = NatsCluster(plan_cluster(tmp_path, 1), tmp_path, "nats-server")  # no TLS
    with pytest.raises(ValidationError, match="has no password"):
        cluster.reload((device_user("port", "cam-1"),))
    assert cluster.config.users == ()
    hub = hub_user("hub", "pw")
    cluster.reload((hub,))  # no node running: the model only
    assert cluster.config.users == (hub,)


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
