"""Read models of the strategy service: which portfolio runs which strategies (``portfolio_strategies``),
and the evaluations per tick (``strategy_evaluations``).

Two projections, so that a tick that reads the configuration catches up only with configuration changes,
never with the previous tick's evaluation results."""

from __future__ import annotations

from typing import Any

import asyncpg

from eventstore import RecordedEvent
from eventstore.projections import Projection
from services.core.events import registry
from services.model.events.strategy import (
    PortfolioEvaluated,
    StrategyAttached,
    StrategyDisabled,
    StrategyEnabled,
    StrategyReconfigured,
)


class StrategyProjection(Projection):
    name = "strategy"
    tables = ("portfolio_strategies",)
    event_types = frozenset({"StrategyAttached", "StrategyReconfigured", "StrategyEnabled", "StrategyDisabled"})

    async def setup(self, con: asyncpg.Connection) -> None:
        await con.execute(
            """
            CREATE TABLE IF NOT EXISTS portfolio_strategies (
                portfolio_id text NOT NULL,
                strategy     text NOT NULL,
                kind         text NOT NULL,
                universe     text[] NOT NULL,
                parameters   jsonb NOT NULL,
                sizing       jsonb NOT NULL,
                enabled      boolean NOT NULL,
                updated_at   timestamptz NOT NULL,
                PRIMARY KEY (portfolio_id, strategy)
            );
            """
        )

    async def apply(self, con: asyncpg.Connection, events: list[RecordedEvent]) -> None:
        for recorded in events:
            event: Any = registry.decode(recorded)
            match event:
                case StrategyAttached() | StrategyReconfigured():
                    enabled = event.enabled if isinstance(event, StrategyAttached) else None
                    await con.execute(
                        """
                        INSERT INTO portfolio_strategies
                        VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, coalesce($7, true), $8)
                        ON CONFLICT (portfolio_id, strategy) DO UPDATE SET kind = excluded.kind,
                            universe = excluded.universe, parameters = excluded.parameters, sizing = excluded.sizing,
                            enabled = coalesce($7, portfolio_strategies.enabled), updated_at = excluded.updated_at
                        """,
                        event.portfolio_id,
                        event.strategy,
                        event.kind,
                        list(event.universe),
                        _json(event.parameters),
                        _json(event.sizing),
                        enabled,
                        event.at,
                    )
                case StrategyEnabled() | StrategyDisabled():
                    await con.execute(
                        "UPDATE portfolio_strategies SET enabled = $3, updated_at = $4"
                        " WHERE portfolio_id = $1 AND strategy = $2",
                        event.portfolio_id,
                        event.strategy,
                        isinstance(event, StrategyEnabled),
                        event.at,
                    )


class EvaluationsProjection(Projection):
    name = "evaluations"
    tables = ("strategy_evaluations",)
    event_types = frozenset({"PortfolioEvaluated"})

    async def setup(self, con: asyncpg.Connection) -> None:
        await con.execute(
            """
            CREATE TABLE IF NOT EXISTS strategy_evaluations (
                portfolio_id      text NOT NULL,
                tick_id           text NOT NULL,
                signals_generated int NOT NULL,
                trades_requested  int NOT NULL,
                orders_refused    int NOT NULL,
                strategy_errors   int NOT NULL,
                halted            boolean NOT NULL,
                evaluated_for     timestamptz NOT NULL,
                PRIMARY KEY (portfolio_id, tick_id)
            );
            """
        )

    async def apply(self, con: asyncpg.Connection, events: list[RecordedEvent]) -> None:
        for recorded in events:
            event = registry.decode(recorded)
            if isinstance(event, PortfolioEvaluated):
                await con.execute(
                    "INSERT INTO strategy_evaluations VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                    event.portfolio_id,
                    event.tick_id,
                    event.signals_generated,
                    event.trades_requested,
                    event.orders_refused,
                    event.strategy_errors,
                    event.halted,
                    event.at,
                )


def _json(value: Any) -> str:
    import msgspec

    return msgspec.json.encode(value).decode()
