"""`openbell serve web` as a user runs it: it serves until SIGTERM; a port in use or a short token stops it
with one line (exit 2)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys

import httpx

from tests.waiting import until


def env_for(pg_dsn: str, nats_url: str, prefix: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ, "OPENBELL_DATABASE_URL": pg_dsn, "OPENBELL_NATS_URL": nats_url,
        "OPENBELL_SUBJECT_PREFIX": prefix, "OPENBELL_LOG_LEVEL": "WARNING", **extra,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_serve_web_answers_and_stops_on_sigterm(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: object
) -> None:
    port = free_port()
    env = env_for(pg_dsn, nats_url, subject_prefix, OPENBELL_WEB_PORT=str(port))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "serve", "web", env=env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as http:

            async def healthy() -> bool:
                try:
                    return (await http.get("/api/health")).json()["status"] == "ok"
                except httpx.TransportError:
                    return False

            await until(healthy, 60, "the web app to report healthy", interval=0.2)
            assert (await http.get("/api/portfolios")).json() == []  # the service created the read models
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, stderr.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_a_port_in_use_or_a_short_token_is_one_line_and_exit_2(pg_dsn: str, nats_url: str, subject_prefix: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "services.cli", "serve", "web"], capture_output=True, text=True, timeout=120,
            env=env_for(pg_dsn, nats_url, subject_prefix, OPENBELL_WEB_PORT=str(port)),
        )
    assert result.returncode == 2, result.stderr
    assert f"cannot serve the dashboard on 127.0.0.1:{port} (OPENBELL_WEB_PORT)" in result.stderr
    assert "Traceback" not in result.stderr

    short = subprocess.run(
        [sys.executable, "-m", "services.cli", "serve", "web"], capture_output=True, text=True, timeout=60,
        env=env_for(pg_dsn, nats_url, subject_prefix, OPENBELL_WEB_TOKEN="secret-but-short"[:10]),
    )
    assert short.returncode == 2
    assert "invalid OPENBELL_WEB_TOKEN: Value error, must be at least 16 characters" in short.stderr
    assert "secret" not in short.stderr  # the value is never echoed
