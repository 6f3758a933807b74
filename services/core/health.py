"""The in-process health of a service host: which background loops run, and whether one died.

Every long-lived loop of a process (the relay, the projection runner, each durable consumer's fetch loop,
the trade-update stream, the clock) registers here when it starts. A loop waits out any error of its
servers by itself (``eventstore.faults.is_retryable``), so a loop that ends while the process is not
stopping is a bug: it is recorded as the process's failure, and ``openbell serve`` then exits non-zero
so that a supervisor restarts it, instead of leaving a process that looks alive and does nothing.

A readiness check reads :func:`current` (the health of the services started last in this process)::

    health = current()
    ready = health is not None and health.ready   # every loop running, none died
    health.snapshot()   # {"ready": bool, "failure": str | None, "loops": {name: "running" | "stopped: ..."}}
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

RUNNING = "running"


class HostHealth:
    def __init__(self) -> None:
        self.loops: dict[str, str] = {}
        self.failure: str | None = None
        self.failed = asyncio.Event()  # set once a loop died: the host stops, the process exits non-zero
        self.stopping = False  # set when the host stops: loops ending then are not failures

    @property
    def ready(self) -> bool:
        return self.failure is None and not self.stopping and all(state == RUNNING for state in self.loops.values())

    def snapshot(self) -> dict[str, Any]:
        return {"ready": self.ready, "failure": self.failure, "loops": dict(self.loops)}

    def watch(self, task: asyncio.Task[Any], name: str | None = None) -> None:
        """Track ``task`` as the loop ``name`` (default: the task's name) until it ends."""
        loop_name = name or task.get_name()
        self.loops[loop_name] = RUNNING
        task.add_done_callback(lambda done: self._ended(loop_name, done))

    def _ended(self, name: str, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            self.loops[name] = "stopped: cancelled"
            if not self.stopping:
                self.died(name, "cancelled")
            return
        error = task.exception()
        reason = f"{type(error).__name__}: {error}" if error is not None else "returned"
        self.loops[name] = f"stopped: {reason}"
        if error is not None:
            log.error("background loop %s died: %r", name, error, exc_info=error)
        if not self.stopping:
            self.died(name, reason if error is not None else "ended while the process was not stopping")

    def died(self, name: str, reason: str) -> None:
        if self.failure is None:
            self.failure = f"background loop {name} stopped ({reason})"
            log.critical("%s: stopping the process", self.failure)
        self.failed.set()


_current: HostHealth | None = None


def current() -> HostHealth | None:
    """The health of the services started last in this process (None before any)."""
    return _current


def set_current(health: HostHealth | None) -> None:
    global _current
    _current = health
