"""docs/asyncapi.json is generated from the code (python -m services.core.asyncapi) and must be current."""

from __future__ import annotations

import json
import subprocess
import sys

from services.core import asyncapi, feeds


def test_the_committed_asyncapi_document_is_up_to_date() -> None:
    # A fresh process: only openbell's own event types are registered (not a test's extra ones).
    result = subprocess.run(
        [sys.executable, "-m", "services.core.asyncapi", "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr + "\nrun: python -m services.core.asyncapi"


def test_every_subject_and_every_feed_has_a_channel_with_the_contract_fields() -> None:
    document = json.loads(asyncapi.DOCUMENT.read_text())
    addresses = {channel["address"] for channel in document["channels"].values()}
    for address in ("{prefix}.tick.{job_type}", "{prefix}.event.{category}.{event_type}", "{prefix}.dlq.{service}",
                    "{prefix}.cmd.portfolio.{command}", "{prefix}.cmd.alert.{command}",
                    "{prefix}.work.strategy_execution"):
        assert address in addresses
    kinds = {feeds.kind_of(feed) for feed in feeds.FEEDS}
    assert kinds == {"price", "fill", "alert", "snapshot", "job", "notification", "halt", "order", "risk",
                     "discrepancy"}
    schemas = document["components"]["schemas"]
    for feed in feeds.FEEDS:
        assert any(a.startswith(f"{{prefix}}.feed.{feeds.kind_of(feed)}.") for a in addresses)
        schema = schemas[feed.__name__]
        assert {"kind", "version", "at"} <= set(schema["required"]) | {"version"}, feed
        assert schema["properties"]["kind"] == {"enum": [feeds.kind_of(feed)]}
    assert "OrderRejectedByRisk" in schemas and "PortfolioHalted" in schemas
