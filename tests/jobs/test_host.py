"""The service host on real NATS and PostgreSQL: a service whose setup fails stops what was started, and
`openbell serve` refuses a metrics port it cannot take before starting anything."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import urllib.request

import pytest

from services.core import host
from services.stack import SERVICES
from tests.jobs import broken_service
from tests.positions.helpers import settings_for
from tests.waiting import until


async def test_a_failing_setup_stops_what_was_started(
    pg_dsn: str, nats_url: str, subject_prefix: str
) -> None:
    catalog = SERVICES.with_service(host.ServiceDefinition("broken", broken_service.setup))
    broken_service.stopped.clear()
    with pytest.raises(RuntimeError, match="setup failed"):
        settings = settings_for(pg_dsn, nats_url, subject_prefix)
        async with host.hosted(["relay", "orders", "broken"], settings, catalog=catalog):
            pytest.fail("the host must not run with a service that failed to set up")
    assert broken_service.stopped == ["loop"]


async def test_serve_with_its_metrics_port_taken_stops_with_one_line(
    pg_dsn: str, nats_url: str, subject_prefix: str
) -> None:
    """`openbell serve` serves its metrics before any service starts: a port in use is a one-line error."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    env = {**os.environ, "OPENBELL_DATABASE_URL": pg_dsn, "OPENBELL_NATS_URL": nats_url,
           "OPENBELL_SUBJECT_PREFIX": subject_prefix, "OPENBELL_METRICS_PORT": str(taken.getsockname()[1])}
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "serve", "relay", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        taken.close()
    assert proc.returncode == 2, err.decode()
    assert "cannot serve metrics on 127.0.0.1:" in err.decode() and "OPENBELL_METRICS_PORT" in err.decode()
    assert "Traceback" not in err.decode()


async def test_serve_exposes_metrics_and_stops_cleanly_on_sigterm(
    pg_dsn: str, nats_url: str, subject_prefix: str
) -> None:
    """`openbell serve relay` as a container runs it: its metrics say the relay is active, and SIGTERM
    (docker stop) ends it with exit code 0."""
    with socket.socket() as probe:  # a free port for the metrics server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OPENBELL_DATABASE_URL": pg_dsn, "OPENBELL_NATS_URL": nats_url,
           "OPENBELL_SUBJECT_PREFIX": subject_prefix, "OPENBELL_METRICS_PORT": str(port)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "serve", "relay", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def relay_active() -> bool:
            return "openbell_relay_active 1.0" in await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")

        await until(relay_active, 30, "the relay's metrics to say it is active", interval=0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "Traceback" not in err.decode()


def _get(url: str) -> str:
    """The body at ``url``; empty while nothing listens there yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except OSError:
        return ""
