"""Prometheus metrics of an openbell process, served on ``OPENBELL_METRICS_PORT`` by ``openbell serve``.

What an operator watches while openbell trades unattended: job runs and their durations (a breaker about
to trip shows as failures first), what the durable consumers did with each message (retries and dead
letters), what became of each order submission, and how far the relay has published the event log.

The metrics live in the process's default registry; every openbell service in the process adds to them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

JOB_RUNS = Counter(
    "openbell_job_runs",
    "Job runs by job type and outcome (completed, failed, skipped, duplicate, in_progress, superseded).",
    ["job_type", "status"],
)
JOB_RUN_SECONDS = Histogram(
    "openbell_job_run_seconds",
    "Duration of the job runs this process completed or failed, from their recorded start.",
    ["job_type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
JOB_CONSECUTIVE_FAILURES = Gauge(
    "openbell_job_consecutive_failures",
    "Consecutive failed runs of each job as this process last saw them (its breaker trips at 10).",
    ["job_type"],
)
JOB_STATUS = Gauge(
    "openbell_job_status",
    "1 for each job's status as this process last saw it (enabled, disabled, or error: breaker open).",
    ["job_type", "status"],
)
PROJECTION_STOPPED = Gauge(
    "openbell_projection_stopped",
    "1 when a projection cannot apply the events after its checkpoint and has stopped (see openbell doctor).",
    ["projection"],
)
MESSAGES = Counter(
    "openbell_consumer_messages",
    "Messages handled by the durable consumers, by consumer and outcome (acked, retried, dead_lettered).",
    ["consumer", "outcome"],
)
ORDER_SUBMISSIONS = Counter(
    "openbell_order_submissions",
    "What each order submission recorded: OrderSubmitted, OrderRejected, OrderSubmitUnknown, or a fill"
    " when the broker had the order already.",
    ["event"],
)


APPENDED_POSITION = Gauge(
    "openbell_store_appended_position",
    "Global position of the last event this process appended. Its maximum over the processes, minus the"
    " active relay's published position, is how far NATS lags behind the log.",
)


class RelayView(Protocol):
    published: int
    published_position: int
    is_leader: asyncio.Event


class _RelayCollector(Collector):
    """What the relays of this process have published (read when scraped)."""

    def __init__(self) -> None:
        self.relays: list[RelayView] = []

    def collect(self) -> Iterable[Metric]:
        published = CounterMetricFamily("openbell_relay_published_events", "Events the relay published to NATS.")
        published.add_metric([], sum(relay.published for relay in self.relays))
        yield published
        leaders = [relay for relay in self.relays if relay.is_leader.is_set()]
        active = GaugeMetricFamily("openbell_relay_active", "1 when a relay of this process holds the relay lock.")
        active.add_metric([], 1 if leaders else 0)
        yield active
        position = GaugeMetricFamily(
            "openbell_relay_published_position", "Global position of the last event the active relay published."
        )
        position.add_metric([], max((relay.published_position for relay in leaders), default=0))
        yield position


_relays = _RelayCollector()
REGISTRY.register(_relays)


def watch_relay(relay: RelayView) -> None:
    _relays.relays.append(relay)


def unwatch_relay(relay: RelayView) -> None:
    if relay in _relays.relays:
        _relays.relays.remove(relay)


_appended_position = 0


def appended(global_position: int) -> None:
    """An append of this process committed, up to ``global_position``."""
    global _appended_position
    if global_position > _appended_position:
        _appended_position = global_position
        APPENDED_POSITION.set(global_position)


def job_health(job_type: str, status: str, consecutive_failures: int, statuses: Iterable[str]) -> None:
    """Record a job's health (``statuses``: every status a job can have, so that only one reads 1)."""
    JOB_CONSECUTIVE_FAILURES.labels(job_type).set(consecutive_failures)
    for each in statuses:
        JOB_STATUS.labels(job_type, each).set(1 if each == status else 0)


def serve_metrics(port: int, address: str = "127.0.0.1") -> tuple[int, Callable[[], None]]:
    """Serve ``/metrics`` over HTTP from a background thread (port 0: a free port). Returns the port and
    the function that stops serving."""
    server, thread = start_http_server(port, addr=address)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return int(server.server_port), stop
