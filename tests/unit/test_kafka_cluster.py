"""The three-node cluster's configuration and `make up`'s choice of Kafka, without a JVM."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka.admin import NewTopic

from infra.devstack import KafkaBroker
from infra.devstack.kafka import _create_when_a_controller_is_known
from infra.kafka_cluster import KafkaCluster, default_kafka_cluster
from infra.up import chosen_kafka
from studentperf.config import ConfigError


def test_nodes_share_one_quorum_and_replicate_three_ways(tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path, [(9001, 9002), (9003, 9004), (9005, 9006)])
    props = [node.server_properties() for node in cluster.nodes]
    assert [p["node.id"] for p in props] == ["1", "2", "3"]
    assert {p["controller.quorum.voters"] for p in props} == {
        "1@127.0.0.1:9002,2@127.0.0.1:9004,3@127.0.0.1:9006"
    }
    assert len({p["log.dirs"] for p in props}) == 3
    for p in props:
        assert p["default.replication.factor"] == p["offsets.topic.replication.factor"] == "3"
        assert p["transaction.state.log.replication.factor"] == "3"
        assert p["min.insync.replicas"] == p["transaction.state.log.min.isr"] == "2"
    assert cluster.bootstrap_servers == "127.0.0.1:9001,127.0.0.1:9003,127.0.0.1:9005"


def test_cluster_id_is_made_once_and_kept(tmp_path: Path) -> None:
    first = KafkaCluster.on_free_ports(tmp_path)._cluster_id()
    assert KafkaCluster.on_free_ports(tmp_path)._cluster_id() == first
    assert KafkaCluster.on_free_ports(tmp_path / "other")._cluster_id() != first


def test_a_lone_broker_is_its_own_quorum_without_replicas(tmp_path: Path) -> None:
    props = KafkaBroker(tmp_path, port=9001, controller_port=9002).server_properties()
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9002"
    assert props["default.replication.factor"] == props["min.insync.replicas"] == "1"


def test_fewer_than_three_nodes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 nodes"):
        KafkaCluster(tmp_path, [(9001, 9002), (9003, 9004)])


def test_make_up_runs_one_broker_unless_told_three() -> None:
    assert isinstance(chosen_kafka({}), KafkaBroker)
    assert isinstance(chosen_kafka({"STUDENTPERF_KAFKA_BROKERS": "1"}), KafkaBroker)
    cluster = chosen_kafka({"STUDENTPERF_KAFKA_BROKERS": "3"})
    assert isinstance(cluster, KafkaCluster)
    assert cluster.bootstrap_servers == default_kafka_cluster().bootstrap_servers
    # Node 1 takes the lone broker's ports, so clients configured for 127.0.0.1:9092 still work.
    assert cluster.nodes[0].port == 9092
    with pytest.raises(ConfigError, match="1 or 3"):
        chosen_kafka({"STUDENTPERF_KAFKA_BROKERS": "2"})


async def test_a_topic_is_created_once_the_metadata_names_a_controller() -> None:
    """A broker just restarted answers metadata before it lists itself: aiokafka's
    create_topics then fails with an AttributeError (no controller), which CI met in
    test_faults; it is tried again until the timeout rather than failing the caller."""

    class NoControllerYet:
        def __init__(self) -> None:
            self.tries = 0

        async def create_topics(self, topics: list[NewTopic], timeout_ms: int) -> str:
            self.tries += 1
            if self.tries < 3:
                raise AttributeError("'NoneType' object has no attribute 'nodeId'")
            return "created"

    admin = NoControllerYet()
    topic = NewTopic(name="t", num_partitions=1, replication_factor=1)
    created = await _create_when_a_controller_is_known(admin, topic, 5.0)
    assert (created, admin.tries) == ("created", 3)
    admin.tries = -(10**6)  # never a controller: the timeout ends it
    with pytest.raises(AttributeError):
        await _create_when_a_controller_is_known(admin, topic, 0.3)
