"""The AsyncAPI document of every NATS subject openbell uses, generated from the code: the subject names of
services/core/subjects.py, the message Structs (ticks, work items, the event envelope and every registered
domain event, the feed contract of services/core/feeds.py) and the command and dead-letter conventions.

``python -m services.core.asyncapi`` rewrites docs/asyncapi.json; ``--check`` fails when it is out of date
(tests/web/test_asyncapi.py does the same)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from eventstore.relay import EventEnvelope
from services.core import feeds
from services.core.jobs import consumer
from services.core.jobs.types import JobType, Tick, WorkItem

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"
EVENT_MODULES = (
    "services.clock.events", "services.core.jobs.events", "services.model.events.alerts",
    "services.model.events.orders", "services.model.events.positions", "services.model.events.strategy",
)
PORTFOLIO_COMMANDS = ("open", "apply", "attach", "enable", "disable", "halt", "resume")
ALERT_COMMANDS = ("create", "list", "remove")
DLQ_HEADERS = (consumer.H_REASON, consumer.H_SUBJECT, consumer.H_STREAM_SEQ, consumer.H_DELIVERIES, consumer.H_SERVICE)
REF = "#/components/schemas/{name}"


def _prefix_parameter() -> dict[str, Any]:
    return {"default": "openbell", "description": "OPENBELL_SUBJECT_PREFIX"}


def build() -> dict[str, Any]:
    from services.core.events import registry

    for module in EVENT_MODULES:
        importlib.import_module(module)

    event_types = [registry.type_of(name) for name in registry.names()]
    structs: list[Any] = [Tick, WorkItem, EventEnvelope, *feeds.FEEDS, *event_types]
    _, schemas = msgspec.json.schema_components(structs, ref_template=REF)

    messages: dict[str, Any] = {
        "Tick": {"payload": {"$ref": REF.format(name="Tick")}, "summary": "run a job for one slot (JetStream)",
                 "headers": {"type": "object", "properties": {"Nats-Msg-Id": {"type": "string",
                                                                            "description": "the tick id"}}}},
        "WorkItem": {"payload": {"$ref": REF.format(name="WorkItem")},
                     "summary": "one portfolio of a strategy_execution tick (JetStream work queue)"},
        "AppendNotice": {"payload": {"type": "string", "description": "<process instance>:<global position>"},
                         "summary": "an append happened (core NATS): relays elsewhere wake at once"},
        "Command": {
            "payload": {"type": "object", "description": "the command's fields as JSON (see the README)"},
            "summary": "a request (core NATS request/reply); the reply is {\"ok\": ...} or {\"error\": \"...\"}",
        },
        "DeadLetter": {
            "payload": {"description": "the message that could not be handled, unchanged"},
            "headers": {"type": "object", "properties": {h: {"type": "string"} for h in DLQ_HEADERS}},
            "summary": "a message a consumer gave up on, with the reason (JetStream, kept for inspection)",
        },
    }
    for event in event_types:
        name = event.__name__
        messages[f"event.{name}"] = {
            "name": name,
            "summary": (event.__doc__ or name).strip().splitlines()[0],
            "headers": {"type": "object", "properties": {"Nats-Msg-Id": {"type": "string",
                                                                       "description": "the event id"}}},
            "payload": {"allOf": [{"$ref": REF.format(name="EventEnvelope")}, {
                "type": "object", "properties": {"type": {"const": name}, "data": {"$ref": REF.format(name=name)}},
            }]},
        }
    channels: dict[str, Any] = {
        "ticks": {
            "address": "{prefix}.tick.{job_type}",
            "description": "clock ticks (JetStream stream <PREFIX>_TICKS, deduplicated by tick id)",
            "parameters": {"prefix": _prefix_parameter(), "job_type": {"enum": [j.value for j in JobType]}},
            "messages": {"Tick": {"$ref": "#/components/messages/Tick"}},
        },
        "events": {
            "address": "{prefix}.event.{category}.{event_type}",
            "description": "every stored event, published by the relay (JetStream stream <PREFIX>_EVENTS); "
                           "category: the stream id before its first '-'",
            "parameters": {"prefix": _prefix_parameter(), "category": {"description": "e.g. order, portfolio"},
                           "event_type": {"enum": registry.names()}},
            "messages": {f"event.{e.__name__}": {"$ref": f"#/components/messages/event.{e.__name__}"}
                         for e in event_types},
        },
        "work": {
            "address": "{prefix}.work.strategy_execution",
            "description": "fan-out of a strategy_execution tick (JetStream work queue <PREFIX>_WORK)",
            "parameters": {"prefix": _prefix_parameter()},
            "messages": {"WorkItem": {"$ref": "#/components/messages/WorkItem"}},
        },
        "store-appended": {
            "address": "{prefix}.store.appended",
            "parameters": {"prefix": _prefix_parameter()},
            "messages": {"AppendNotice": {"$ref": "#/components/messages/AppendNotice"}},
        },
        "portfolio-commands": {
            "address": "{prefix}.cmd.portfolio.{command}",
            "parameters": {"prefix": _prefix_parameter(), "command": {"enum": list(PORTFOLIO_COMMANDS)}},
            "messages": {"Command": {"$ref": "#/components/messages/Command"}},
        },
        "alert-commands": {
            "address": "{prefix}.cmd.alert.{command}",
            "parameters": {"prefix": _prefix_parameter(), "command": {"enum": list(ALERT_COMMANDS)}},
            "messages": {"Command": {"$ref": "#/components/messages/Command"}},
        },
        "dead-letters": {
            "address": "{prefix}.dlq.{service}",
            "description": "JetStream stream <PREFIX>_DLQ",
            "parameters": {"prefix": _prefix_parameter(), "service": {"description": "the consuming service"}},
            "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
        },
    }
    for feed in feeds.FEEDS:
        kind = feeds.kind_of(feed)
        name = feed.__name__
        messages[name] = {"name": name, "summary": feed.summary, "payload": {"$ref": REF.format(name=name)}}
        key = "job_circuit_opened" if feed is feeds.CircuitOpenedFeed else "{key}"
        channel: dict[str, Any] = {
            "address": f"{{prefix}}.feed.{kind}.{key}",
            "description": f"{feed.summary} (core NATS, kept by the <PREFIX>_FEEDS stream); key: {feed.subject_key}",
            "parameters": {"prefix": _prefix_parameter()},
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        if key == "{key}":
            channel["parameters"]["key"] = {"description": feed.subject_key}
        channels[f"feed-{kind}"] = channel
    operations = {
        f"receive-{name}": {"action": "receive", "channel": {"$ref": f"#/channels/{name}"}} for name in channels
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "openbell",
            "version": str(feeds.FEED_VERSION),
            "description": "Every NATS subject of openbell. Feed bodies follow services/core/feeds.py: kind, "
                           "version, at (UTC, ISO-8601, microseconds, Z); money strings with 2 decimals, prices "
                           "with 2 (4 below 1), quantities whole or with their decimals. Generated by "
                           "`python -m services.core.asyncapi`.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail when docs/asyncapi.json is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not DOCUMENT.exists() or DOCUMENT.read_text() != text:
            print(f"{DOCUMENT} is out of date: run python -m services.core.asyncapi", file=sys.stderr)
            return 1
        return 0
    DOCUMENT.write_text(text)
    print(f"wrote {DOCUMENT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
