"""Fuzzed commands: hundreds of malformed requests to every command subject, on real NATS and PostgreSQL.

Every request is answered with a one-line error that does not echo it, nothing is appended, no projection
stops, and the services still answer valid commands afterwards.
"""

from __future__ import annotations

import random
import time
from typing import Any

import msgspec
from nats.aio.client import Client as NatsClient

from services.model.text import MAX_ERROR
from services.stack import hosted
from tests.positions.helpers import settings_for, sim_factory

SEED = 20261203
REQUESTS = 360

# Every command subject the services serve (grep "cmd(" services), each with a request that would be
# valid, or at least well-formed (a corruption below must be what makes it fail).
VALID: dict[str, dict[str, Any]] = {
    "portfolio.open": {"name": "fuzz", "starting_cash": "1000", "risk": {"max_order_notional": "500"}},
    "portfolio.apply": {
        "name": "fuzz",
        "starting_cash": "1000",
        "strategy": [{"kind": "momentum", "universe": ["AAPL"], "parameters": {"lookback": 2}}],
    },
    "portfolio.attach": {"portfolio": "fuzz", "strategy": {"kind": "momentum", "universe": ["AAPL"]}},
    "portfolio.enable": {"portfolio": "fuzz", "strategy": "momentum"},
    "portfolio.disable": {"portfolio": "fuzz", "strategy": "momentum"},
    "portfolio.halt": {"portfolio": "fuzz", "reason": "why"},
    "portfolio.resume": {"portfolio": "fuzz", "reason": "why"},
    "alert.create": {"symbol": "AAPL", "condition": "above", "threshold": "100"},
    "alert.list": {"active_only": True},
    "alert.remove": {"alert_id": "a1"},
}

# Values that no field of any command takes: control characters and trailing newlines, huge and deep
# values, numbers beyond any bound, objects where a field wants something else (or with unknown members).
BAD_VALUES: list[Any] = [
    "fuzz\n",
    "AAPL\n",
    "a\x00b",
    "\x1b[2J\x1b]0;owned\x07",
    "x" * 5000,
    [[[[[[[[[[["deep"]]]]]]]]]]],
    list(range(1500)),
    10**40,
    -(10**40),
    {"$unknown": 1},
    {"nested": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}},
]

# Bodies that are not a JSON object at all, or whose numbers JSON cannot carry.
RAW_BODIES: list[bytes] = [
    b"{not json",
    b'{"name": "fuzz", "starting_cash": NaN}',
    b'{"name": "fuzz", "starting_cash": Infinity}',
    b'{"threshold": -Infinity}',
    b'{"starting_cash": 1e999999}',
    b'{"active_only": 1e999999}',
    b"[1, 2, 3]",
    b'"a string"',
    b"42",
    b"null",
    b"\xff\xfe\x00",
    b"[" * 50_000 + b"]" * 50_000,
    b'{"a": ' * 5000 + b"1" + b"}" * 5000,
    b'{"name": "fuzz"}{"name": "other"}',
    b'{"reason": "' + b"r" * 200_000 + b'"}',
]


def malformed(rng: random.Random, subject: str) -> bytes:
    """``subject``'s valid request with one field (or a new, unknown one) set to a value nothing takes."""
    body = dict(VALID[subject])
    field = rng.choice([*body, "unknown_field"])
    body[field] = rng.choice(BAD_VALUES)
    return msgspec.json.encode(body)


async def test_malformed_commands_to_every_subject_get_a_one_line_error_and_change_nothing(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient
) -> None:
    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    rng = random.Random(SEED)
    subjects = sorted(VALID)
    async with hosted(
        ["relay", "projections", "strategy", "alerts"], settings, broker_factory=sim_factory(pg_dsn)
    ) as ctx:
        store = ctx.rt.store
        started = time.monotonic()
        answered: dict[str, int] = dict.fromkeys(subjects, 0)
        # Every raw body to every subject, then corrupted requests in turn to every subject.
        requests = [(subject, raw) for subject in subjects for raw in RAW_BODIES]
        requests += [(subjects[i % len(subjects)], malformed(rng, subjects[i % len(subjects)]))
                     for i in range(REQUESTS - len(requests))]
        assert len(requests) >= 300
        for subject, body in requests:
            reply = await nc.request(f"{subject_prefix}.cmd.{subject}", body, timeout=10)
            answer = msgspec.json.decode(reply.data)
            assert set(answer) == {"error"}, (subject, body[:200], answer)
            error = answer["error"]
            assert isinstance(error, str) and error, (subject, body[:200])
            assert "\n" not in error and "\x1b" not in error and "\x00" not in error, error
            assert len(error) <= MAX_ERROR, error
            assert len(reply.data) < 1024, "an error reply echoed its input"
            answered[subject] += 1
        # An unknown command name on each service's wildcard subject is answered too.
        for unknown in ("portfolio.explode", "alert.explode"):
            reply = await nc.request(f"{subject_prefix}.cmd.{unknown}", b"{}", timeout=10)
            assert set(msgspec.json.decode(reply.data)) == {"error"}
        elapsed = time.monotonic() - started

        assert all(count >= REQUESTS // len(subjects) for count in answered.values()), answered
        assert await store.count() == 0, "a malformed command appended something"
        assert ctx.projections.stopped == {}
        for name in sorted(ctx.projections.projections):
            assert await ctx.projections.check(name) is None, name

        # The services still answer: a valid portfolio opens, alerts are listed.
        opened = msgspec.json.decode(
            (await nc.request(f"{subject_prefix}.cmd.portfolio.open", msgspec.json.encode(VALID["portfolio.open"]),
                              timeout=10)).data
        )
        assert opened.get("ok") is True, opened
        listed = msgspec.json.decode(
            (await nc.request(f"{subject_prefix}.cmd.alert.list", b"{}", timeout=10)).data
        )
        assert listed == {"alerts": []}, listed
        assert elapsed < 60, f"{REQUESTS} fuzzed commands took {elapsed:.1f}s"
