"""NATS subject and stream names, all derived from one configurable prefix (default ``openbell``)."""

from __future__ import annotations

import re

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

FEEDS_MAX_AGE_SECONDS = 2 * 24 * 3600.0
FEEDS_MAX_MESSAGES = 1_000_000

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def _token(value: str, what: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"invalid {what} for a NATS subject token: {value!r}")
    return value


# The stream settings ensure_streams manages (the server fills in the rest).
_MANAGED_FIELDS = ("subjects", "retention", "storage", "discard", "duplicate_window", "num_replicas")


class Subjects:
    def __init__(self, prefix: str = "openbell") -> None:
        self.prefix = _token(prefix, "subject prefix")

    # JetStream (durable): ticks and every stored event.
    def tick(self, job_type: str) -> str:
        return f"{self.prefix}.tick.{_token(job_type, 'job type')}"

    def event(self, category: str, event_type: str) -> str:
        return f"{self.prefix}.event.{_token(category, 'category')}.{_token(event_type, 'event type')}"

    # Core NATS: live feeds, commands (request/reply), dead letters.
    def feed(self, kind: str, key: str) -> str:
        return f"{self.prefix}.feed.{_token(kind, 'feed kind')}.{_token(key, 'feed key')}"

    def cmd(self, name: str) -> str:
        return f"{self.prefix}.cmd.{name}"

    def work(self, queue: str) -> str:
        """JetStream work queues a service fans its jobs out on (shared by its workers)."""
        return f"{self.prefix}.work.{_token(queue, 'work queue')}"

    def dlq(self, service: str) -> str:
        return f"{self.prefix}.dlq.{_token(service, 'service')}"

    @property
    def ticks_stream(self) -> str:
        return f"{self.prefix.upper().replace('-', '_')}_TICKS"

    @property
    def events_stream(self) -> str:
        return f"{self.prefix.upper().replace('-', '_')}_EVENTS"

    @property
    def work_stream(self) -> str:
        return f"{self.prefix.upper().replace('-', '_')}_WORK"

    @property
    def dlq_stream(self) -> str:
        return f"{self.prefix.upper().replace('-', '_')}_DLQ"

    @property
    def feeds_stream(self) -> str:
        """Captures every live feed message, so a reader (the web service) can resume from a sequence."""
        return f"{self.prefix.upper().replace('-', '_')}_FEEDS"

    async def ensure_streams(self, js: JetStreamContext, *, dedupe_window: float = 900.0, replicas: int = 1) -> None:
        """Create (or update) the JetStream streams. ``dedupe_window``: seconds a Nats-Msg-Id is remembered;
        ``replicas``: copies of each stream in a cluster (OPENBELL_STREAM_REPLICAS; 3 survives a lost server)."""
        configs = [
            StreamConfig(name=self.ticks_stream, subjects=[f"{self.prefix}.tick.>"]),
            StreamConfig(name=self.events_stream, subjects=[f"{self.prefix}.event.>"]),
            # Fan-out of a job's work items (e.g. one per portfolio), deduplicated by Nats-Msg-Id.
            StreamConfig(name=self.work_stream, subjects=[f"{self.prefix}.work.>"]),
            # Dead letters are kept (on disk) for inspection and replay.
            StreamConfig(name=self.dlq_stream, subjects=[f"{self.prefix}.dlq.>"]),
            # Feeds are published on core NATS; this stream keeps them (two days, a million at most) so that
            # a page that reconnects resumes after the last stream sequence it saw, without a gap.
            StreamConfig(
                name=self.feeds_stream, subjects=[f"{self.prefix}.feed.>"], max_age=FEEDS_MAX_AGE_SECONDS,
                max_msgs=FEEDS_MAX_MESSAGES,
            ),
        ]
        for config in configs:
            # Work items are gone once acknowledged; ticks, events and dead letters stay for audit.
            work = config.name == self.work_stream
            config.retention = RetentionPolicy.WORK_QUEUE if work else RetentionPolicy.LIMITS
            config.storage = StorageType.FILE
            config.discard = DiscardPolicy.OLD
            config.duplicate_window = dedupe_window
            config.num_replicas = replicas
            try:
                current = (await js.stream_info(config.name)).config  # type: ignore[arg-type]
            except NotFoundError:
                await js.add_stream(config)
            else:
                # Only when something changed: a service's NATS identity may read streams, not update them,
                # and on a cluster every update is a round of consensus.
                if any(getattr(current, name) != getattr(config, name) for name in _MANAGED_FIELDS):
                    await js.update_stream(config)
