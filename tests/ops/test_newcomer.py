"""A newcomer's session on a fresh data dir, every step a real ``openbell`` process on the embedded servers:
the README's first line (a small demo), the demo rerun twice with --reset, ``servers status``, ``serve all``
with its heartbeat and /healthz, ``tail`` across a restart of the servers, and unreachable servers
(one line each, exit 2, in under 10 s)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from services.core.embedded import EmbeddedNats, free_port
from tests.waiting import until, until_sync


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBELL_")}
    return {**env, "OPENBELL_DATA_DIR": str(data_dir), "COLUMNS": "200", **extra}


def _openbell(data_dir: Path, *args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=_env(data_dir, **extra), capture_output=True, text=True, timeout=timeout, cwd=data_dir.parent,
    )


def _spawn(data_dir: Path, log: Path, *args: str, **extra: str) -> subprocess.Popen[str]:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", *args],
            env=_env(data_dir, **extra), stdout=out, stderr=subprocess.STDOUT, text=True, cwd=data_dir.parent,
        )


def _http(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "data"
    yield data
    _openbell(data, "servers", "stop")  # whatever the test left running


# Three demo runs and a dozen openbell processes: about a minute alone, more on a loaded machine.
@pytest.mark.timeout(600)
async def test_newcomer_session(data_dir: Path, tmp_path: Path) -> None:
    t0 = time.monotonic()
    # The README's first line, small: the first run starts both servers and says so, nothing is "reused".
    first = _openbell(data_dir, "demo", "--days", "1", "--portfolios", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "started PostgreSQL" in first.stderr and "started nats-server" in first.stderr
    assert "using" not in first.stderr and "reusing" not in first.stderr
    assert "simulated 1 trading day (" in first.stdout

    for _ in range(2):
        rerun = _openbell(data_dir, "demo", "--days", "1", "--portfolios", "1", "--reset")
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert "removing what 1 previous demo run made" in rerun.stdout
        assert "using PostgreSQL" in rerun.stderr and "started" not in rerun.stderr
        assert "removing stream OPENBELL_TICKS" in rerun.stdout and "simulated 1 trading day (" in rerun.stdout
        # Each rerun is a world of its own that completes its day: exactly its one snapshot, none left over.
        snapshots = _openbell(data_dir, "snapshots", "--json")
        assert snapshots.returncode == 0, snapshots.stderr
        assert [s["portfolio_id"] for s in json.loads(snapshots.stdout)] == ["demo-01"]

    print(f"demo and two reruns: {time.monotonic() - t0:.1f}s")
    status = _openbell(data_dir, "servers", "status", "--json")
    assert status.returncode == 0, status.stderr
    servers = {s["name"]: s for s in json.loads(status.stdout)["servers"]}
    assert servers["PostgreSQL"]["running"] and servers["nats-server"]["running"]
    nats_port = servers["nats-server"]["port"]

    # serve all: heartbeat at start, /healthz and /readyz, a line on stop; the servers stay up after it.
    port = free_port()
    serve_log = tmp_path / "serve.log"
    serve = _spawn(data_dir, serve_log, "serve", "all", OPENBELL_METRICS_PORT=str(port),
                   OPENBELL_HEARTBEAT_SECONDS="1")
    try:
        until_sync(lambda: _http(f"http://127.0.0.1:{port}/healthz")[0] == 200, 60, "/healthz")
        until_sync(lambda: _http(f"http://127.0.0.1:{port}/readyz")[0] == 200, 30, "/readyz")
        ready = json.loads(_http(f"http://127.0.0.1:{port}/readyz")[1])
        assert ready["ready"] and ready["consumers_bound"] == ready["consumers_expected"] > 0
        until_sync(lambda: serve_log.read_text().count("heartbeat:") >= 2, 30, "two heartbeats")
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(30)
    text = serve_log.read_text()
    assert serve.returncode == 0, text[-3000:]
    assert "next ticks: strategy_execution" in text and " NY / " in text and "market " in text
    assert "stopped: relay, projections, clock" in text and "Traceback" not in text
    assert _openbell(data_dir, "servers", "status").returncode == 0  # stopping serve left them running

    print(f"serve all: {time.monotonic() - t0:.1f}s")
    # tail and events --follow across a restart of the servers: one line when a server goes, one when it
    # is back, same port; the follow resumes after the last event it printed.
    tail_log, follow_log = tmp_path / "tail.log", tmp_path / "follow.log"
    tail = _spawn(data_dir, tail_log, "tail", "--count", "2", OPENBELL_LOG_LEVEL="INFO")
    follow = _spawn(data_dir, follow_log, "events", "--follow", "--stream", "portfolio-demo-01")
    try:
        # A service's identity (the one that publishes feeds), from the data dir's generated credentials.
        feed_publisher = {"user": "services", "password": EmbeddedNats(data_dir / "nats").password("services")}
        until_sync(lambda: "following" in tail_log.read_text(), 30, "tail to follow")
        until_sync(lambda: "PortfolioOpened" in follow_log.read_text(), 30, "events --follow to catch up")
        nc = await nats.connect(f"nats://127.0.0.1:{nats_port}", **feed_publisher)
        await nc.publish("openbell.feed.test.one", b'{"n": 1}')
        await nc.close()
        until_sync(lambda: "n=1" in tail_log.read_text(), 10, "the first message")
        assert "stopped (pid" in "\n".join(_openbell(data_dir, "servers", "stop").stdout.splitlines())
        until_sync(lambda: "lost NATS" in tail_log.read_text(), 10, "the outage line")
        until_sync(lambda: "lost PostgreSQL" in follow_log.read_text(), 60, "the follow's outage line")
        restarted = _openbell(data_dir, "servers", "start")
        assert f"started nats-server on 127.0.0.1:{nats_port}" in restarted.stdout, restarted.stdout
        nc = await nats.connect(f"nats://127.0.0.1:{nats_port}", **feed_publisher)

        async def tail_got_the_second() -> bool:  # core NATS: sent again until the tail is back and ends
            await nc.publish("openbell.feed.test.two", b'{"n": 2}')
            await nc.flush()
            return tail.poll() is not None

        await until(tail_got_the_second, 20, "the tail to receive a message after the restart", interval=0.2)
        await nc.close()
        tail.wait(5)
        assert _openbell(data_dir, "portfolio", "halt", "demo-01").returncode == 0
        until_sync(lambda: "PortfolioHalted" in follow_log.read_text(), 30, "the follow to resume")
    finally:
        for process in (tail, follow):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    followed = follow_log.read_text()
    assert followed.count("lost PostgreSQL") == 1 and "is back" in followed and "Traceback" not in followed
    assert follow.returncode == 130, followed[-3000:]  # Ctrl-C
    text = tail_log.read_text()
    assert tail.returncode == 0, text[-3000:]
    assert "n=2" in text and text.count("lost NATS") == 1 and "is back" in text
    assert "Traceback" not in text

    print(f"tail: {time.monotonic() - t0:.1f}s")
    # Unreachable servers: one line each, exit 2, in under 10 s; a password is never shown.
    for variable, url, name in (
        ("OPENBELL_NATS_URL", "nats://127.0.0.1:1", "NATS"),
        ("OPENBELL_DATABASE_URL", "postgresql://someone:s3cret@127.0.0.1:1/openbell", "PostgreSQL"),
    ):
        started = time.monotonic()
        failed = _openbell(data_dir, "jobs", timeout=30, OPENBELL_LOG_LEVEL="WARNING", **{variable: url})
        assert time.monotonic() - started < 10
        assert failed.returncode == 2
        lines = failed.stderr.strip().splitlines()
        shown = url.replace("someone:s3cret@", "")
        assert len(lines) == 1 and lines[0].startswith(f"error: cannot reach {name} at {shown}: "), lines
        assert "s3cret" not in failed.stderr + failed.stdout
