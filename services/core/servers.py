"""The embedded servers' lifecycle: started detached, they outlive the command that started them.

``openbell servers start|stop|status``, and every command that needs a server when neither
``OPENBELL_NATS_URL`` nor ``OPENBELL_DATABASE_URL`` names one, go through :func:`ensure_embedded`: a server
already running for the data dir is used, a missing one is started detached (its own session, no stop at
exit) on the port it had last time, recorded in ``<data_dir>/servers.json``, so a page or ``openbell tail``
can reconnect to the same address after a restart. Only ``openbell servers stop`` stops them.

This module also turns an unreachable server into one line: :class:`ServerUnreachable` names the server
and its address (never a password).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from services.core.embedded import EmbeddedNats, EmbeddedPostgres, pid_alive, port_open

log = logging.getLogger(__name__)

PORTS_FILE = "servers.json"
# How long a command waits for a server before it gives up with one line (exit 2).
CONNECT_TIMEOUT_SECONDS = 5.0


class ServerUnreachable(Exception):
    """A server a command needs could not be reached: the message is one line naming it and its address."""


def redact_url(url: str) -> str:
    """``scheme://host:port/database`` of a server URL: no user, no password, no query (a DSN's password
    may be in any of them). The comma-separated URLs of a NATS cluster are redacted one by one; a libpq
    host list (``host1:port1,host2:port2``) is kept whole, without the user."""
    urls = [item.strip() for item in url.split(",")]
    if len(urls) > 1 and all("://" in item for item in urls):
        return ",".join(redact_url(item) for item in urls)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a host list)
    except ValueError:
        if not url.startswith(("postgres://", "postgresql://")):
            return "<unparsable url>"
        hosts = parts.netloc.rpartition("@")[2]
        return f"{parts.scheme}://{hosts}{parts.path}"
    host = parts.hostname or ""
    if not host and parts.query:
        # postgresql://user@/db?host=/path/to/socket&port=5432: name the socket directory's server
        query = dict(item.partition("=")[::2] for item in parts.query.split("&"))
        host = query.get("host", "")
        port = query.get("port")
        return f"{parts.scheme}://{host}{':' + port if port else ''}{parts.path}"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True)
class EmbeddedServers:
    postgres: EmbeddedPostgres | None
    nats: EmbeddedNats | None
    # One line per server: "started ..." or "using ...", true for this call.
    lines: tuple[str, ...]


def _ports_path(data_dir: Path) -> Path:
    return data_dir / PORTS_FILE


def recorded_ports(data_dir: Path) -> dict[str, int]:
    try:
        ports = json.loads(_ports_path(data_dir).read_text())
    except (OSError, ValueError):
        return {}
    return {key: int(value) for key, value in ports.items() if isinstance(value, int)}


def _record_ports(data_dir: Path, **ports: int | None) -> None:
    merged = recorded_ports(data_dir) | {key: value for key, value in ports.items() if value is not None}
    tmp = _ports_path(data_dir).with_suffix(".tmp")
    tmp.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n")
    tmp.replace(_ports_path(data_dir))


def _free(port: int | None) -> int | None:
    """The recorded port when nothing listens on it now (else None: a new free port is chosen)."""
    return port if port is not None and not port_open("127.0.0.1", port) else None


@contextlib.contextmanager
def _lifecycle_lock(data_dir: Path) -> Iterator[None]:
    """Two commands starting at once start one server each, not two."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "servers.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# (data dir, server) this process started: using them again later is not news worth a line.
_started_by_this_process: set[tuple[Path, str]] = set()


def ensure_embedded(
    data_dir: Path,
    *,
    postgres: bool = True,
    nats: bool = True,
    prefix: str = "openbell",
    websocket_origins: tuple[str, ...] | None = None,
) -> EmbeddedServers:
    """Use the embedded servers running for ``data_dir``; start the missing ones detached. A nats-server
    started here gets one user per role for the subject prefix ``prefix`` (services/core/nats_auth.py) and
    lets pages of ``websocket_origins`` use its websocket listener as the read-only feed user."""
    data_dir = data_dir.resolve()
    lines: list[str] = []
    pg_server = nats_server = None
    with _lifecycle_lock(data_dir):
        ports = recorded_ports(data_dir)
        if postgres:
            pg_server = EmbeddedPostgres(data_dir / "postgres", detached=True)
            running = pg_server._running_port()
            if running is not None:
                pg_server.port = running
                if (data_dir, "postgres") not in _started_by_this_process:
                    lines.append(f"using PostgreSQL on 127.0.0.1:{running} (already running)")
            else:
                pg_server.port = _free(ports.get("postgres"))
                pg_server.start(reuse=False)
                _started_by_this_process.add((data_dir, "postgres"))
                lines.append(f"started PostgreSQL on 127.0.0.1:{pg_server.port} (stop: openbell servers stop)")
        if nats:
            nats_server = EmbeddedNats(data_dir / "nats", prefix=prefix, detached=True)
            if websocket_origins is not None:
                nats_server.websocket_origins = websocket_origins
            state = nats_server._read_state()
            if state is not None:
                nats_server.port, nats_server.websocket_port = int(state["port"]), state.get("websocket_port")
                if (data_dir, "nats") not in _started_by_this_process:
                    lines.append(f"using nats-server on 127.0.0.1:{nats_server.port} (already running)")
            else:
                nats_server.port = _free(ports.get("nats"))
                nats_server.websocket_port = _free(ports.get("websocket"))
                nats_server.start(reuse=False)
                _started_by_this_process.add((data_dir, "nats"))
                lines.append(
                    f"started nats-server on 127.0.0.1:{nats_server.port}, websocket {nats_server.websocket_port}"
                    " (stop: openbell servers stop)"
                )
        _record_ports(
            data_dir,
            postgres=pg_server.port if pg_server else None,
            nats=nats_server.port if nats_server else None,
            websocket=nats_server.websocket_port if nats_server else None,
        )
    for line in lines:
        log.info("%s", line)
    return EmbeddedServers(pg_server, nats_server, tuple(lines))


@dataclass(frozen=True)
class ServerStatus:
    name: str
    running: bool
    pid: int | None
    port: int | None
    websocket_port: int | None
    data_dir: str

    def line(self) -> str:
        if not self.running:
            where = f" (last port {self.port})" if self.port else ""
            return f"{self.name}: stopped{where}, data in {self.data_dir}"
        websocket = f", websocket {self.websocket_port}" if self.websocket_port else ""
        return f"{self.name}: running, pid {self.pid}, 127.0.0.1:{self.port}{websocket}, data in {self.data_dir}"


def _postgres_pid(pg: EmbeddedPostgres) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((pg.pgdata / "postmaster.pid").read_text().splitlines()[0])
    return None


def embedded_status(data_dir: Path) -> list[ServerStatus]:
    data_dir = data_dir.resolve()
    ports = recorded_ports(data_dir)
    pg = EmbeddedPostgres(data_dir / "postgres")
    pg_port = pg._running_port()
    nats_server = EmbeddedNats(data_dir / "nats")
    state = nats_server._read_state()
    return [
        ServerStatus(
            "PostgreSQL", pg_port is not None, _postgres_pid(pg) if pg_port else None,
            pg_port or ports.get("postgres"), None, str(pg.pgdata),
        ),
        ServerStatus(
            "nats-server", state is not None, int(state["pid"]) if state else None,
            int(state["port"]) if state else ports.get("nats"),
            (state or {}).get("websocket_port") or ports.get("websocket"), str(nats_server.data_dir),
        ),
    ]


def stop_embedded(data_dir: Path, timeout: float = 30) -> list[str]:
    """Stop the servers running for ``data_dir``; one line per server saying what was done."""
    data_dir = data_dir.resolve()
    lines = []
    with _lifecycle_lock(data_dir):
        nats_server = EmbeddedNats(data_dir / "nats")
        state = nats_server._read_state()
        if state is None:
            lines.append("nats-server: not running")
        else:
            pid = int(state["pid"])
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
            (nats_server.data_dir / "nats.json").unlink(missing_ok=True)
            lines.append(f"nats-server: stopped (pid {pid}, port {state['port']})")
        pg = EmbeddedPostgres(data_dir / "postgres")
        port = pg._running_port()
        if port is None:
            lines.append("PostgreSQL: not running")
        else:
            pg.port, pg.started_here = port, True
            pg.stop()
            if pg._running_port() is not None:
                lines.append(f"PostgreSQL: still running on port {port}; see {pg.pgdata / 'server.log'}")
            else:
                lines.append(f"PostgreSQL: stopped (port {port})")
    return lines
