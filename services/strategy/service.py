"""The strategy service's wiring: what it consumes and serves, and which module handles each.

- ``<prefix>.tick.strategy_execution``: the job of ``execution`` (through the job ledger);
- ``<prefix>.work.strategy_execution``: one portfolio's evaluation (``evaluation``), the fan-out's items;
- ``<prefix>.cmd.portfolio.*``: portfolio commands, answered by ``command_handler``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import msgspec
from faststream.nats.annotations import NatsMessage

from services.core.host import ServiceContext
from services.core.jobs.consumer import Delivery, Reject, subscribe_durable, subscribe_ticks
from services.core.jobs.types import JobType, WorkItem
from services.strategy.command_handler import handle_command
from services.strategy.evaluation import Caches, evaluate_portfolio
from services.strategy.execution import WORK_QUEUE, prefetch_tick, strategy_execution

SERVICE = "strategy"

_work_decoder = msgspec.json.Decoder(WorkItem)


async def setup(ctx: ServiceContext) -> None:
    subjects = ctx.rt.subjects
    caches = Caches()

    subscribe_ticks(
        ctx.consumers,
        subjects=subjects,
        service=SERVICE,
        job_type=JobType.STRATEGY_EXECUTION,
        runner=ctx.jobs,
        job=partial(strategy_execution, ctx, caches),
        prefetch=partial(prefetch_tick, ctx, caches),
        # Every evaluation is one atomic NO_STREAM append per portfolio and tick: a second run of a tick
        # writes nothing, so the job need not wait for its start to be recorded.
        idempotent_effects=True,
    )

    async def on_work(delivery: Delivery) -> None:
        try:
            item = _work_decoder.decode(delivery.data)
        except msgspec.DecodeError as exc:
            raise Reject(f"malformed work item: {exc}") from None
        await evaluate_portfolio(ctx, caches, item)

    subscribe_durable(
        ctx.consumers,
        subjects=subjects,
        service=SERVICE,
        subject=subjects.work(WORK_QUEUE),
        stream=subjects.work_stream,
        handler=on_work,
        durable=f"{SERVICE}_{WORK_QUEUE}",
        batch_size=8,
    )

    async def raw_body(message: NatsMessage) -> bytes:
        # The body as sent: decoded by handle_command, which answers whatever it is (FastStream's own
        # JSON decoding would raise on a deep or malformed body before the handler could answer).
        return message.body

    @ctx.bus.subscriber(subjects.cmd("portfolio.*"), queue=SERVICE, decoder=raw_body)
    async def on_command(message: NatsMessage) -> dict[str, Any]:
        raw = message.raw_message
        return await handle_command(ctx, raw.subject.rsplit(".", 1)[-1], raw.data)
