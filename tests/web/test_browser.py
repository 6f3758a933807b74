"""The dashboard in a real browser (Debian's chromium, driven by Playwright; no browser is downloaded)
during a demo day: every portfolio's equity curve and the jobs table, live updates without a reload, a
restart of the web server with no update lost, and operator actions (refused without the token, shown as a
notification with it). Screenshots go to tests/web/artifacts/ (or $OPENBELL_TEST_ARTIFACTS)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from eventstore.projections import ProjectionRunner
from services.core import feeds
from services.core.runtime import Runtime
from services.demo import run_demo
from services.stack import all_projections, hosted
from services.web.live import feed_position
from services.web.server import WebServer
from tests.waiting import until
from tests.web.conftest import OPERATOR_TOKEN

CHROMIUM = os.environ.get("OPENBELL_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-dev-shm-usage",
]
ARTIFACTS = Path(os.environ.get("OPENBELL_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))
PORTFOLIOS = 3

pytestmark = pytest.mark.timeout(240)


def chromium_path() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (the README's test line does)")
    return CHROMIUM


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_path()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def page_seqs(page: Page) -> list[int]:
    return await page.evaluate("window.openbell.seqs")


async def screenshot(page: Page, name: str) -> None:
    await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    opened = await browser.new_page(viewport={"width": 1440, "height": 1000})
    yield opened
    await screenshot(opened, "last-state")  # also when the test failed: what the page showed


async def test_dashboard_during_a_demo_day(rt: Runtime, web: WebServer, page: Page) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(web.url)
    await page.wait_for_function("document.getElementById('live-status').textContent === 'live'")
    start = await page.evaluate("window.openbell.seqs.length")
    assert start == 0

    demo = asyncio.create_task(run_demo(rt, days=1, portfolios=PORTFOLIOS, seed=7, today=date.today()))
    try:
        # Live updates arrive on the open page: no reload, no navigation.
        await page.wait_for_function("window.openbell.seqs.length >= 30", timeout=60_000)

        # The web server goes away mid-day; the day goes on; the page resumes after its last sequence.
        await web.stop()
        await page.wait_for_function("document.getElementById('live-status').textContent === 'reconnecting'")
        seen_before = (await page_seqs(page))[-1]

        async def published_meanwhile() -> bool:
            return (await feed_position(rt.js, rt.subjects))[1] >= seen_before + 20

        await until(published_meanwhile, 60, "20 feed messages published while the page reconnects")
        await web.start()
        await page.wait_for_function(f"window.openbell.seqs.includes({seen_before + 20})", timeout=30_000)
        await demo
    finally:
        if not demo.done():
            demo.cancel()
    # As `openbell demo` does: the read models take in the day's last events (the services have stopped).
    await ProjectionRunner(rt.store, all_projections()).run_once()

    last = (await feed_position(rt.js, rt.subjects))[1]
    # Every message of the day's feeds follows the contract (its kind's Struct decodes it), and the
    # lifecycle feeds derived from the events were published along the others.
    kinds: dict[str, int] = {}
    sub = await rt.js.subscribe(f"{rt.subjects.prefix}.feed.>", stream=rt.subjects.feeds_stream,
                                ordered_consumer=True)
    for _ in range(last):
        msg = await sub.next_msg(timeout=10)
        body = feeds.decode(msg.data)
        assert msg.subject.split(".")[2] == feeds.kind_of(type(body)) and body.at.endswith("Z")
        kinds[feeds.kind_of(type(body))] = kinds.get(feeds.kind_of(type(body)), 0) + 1
    await sub.unsubscribe()
    assert {"price", "fill", "snapshot", "job", "order", "risk"} <= set(kinds), kinds
    assert kinds["snapshot"] == PORTFOLIOS
    await page.wait_for_function(f"window.openbell.seqs.includes({last})", timeout=30_000)
    seqs = await page_seqs(page)
    first = seqs[0]
    assert seqs == list(range(first, last + 1)), "an update was lost or repeated"
    assert await page.evaluate("window.openbell.gaps") == 0 and first <= 3  # from the start of the day

    # Every portfolio's equity curve (starting cash, the day's snapshot, now) with its starting-cash line,
    # and the jobs table with each job's runs.
    await page.wait_for_function(
        f"""document.querySelectorAll('svg.equity-curve').length === {PORTFOLIOS} &&
            [...document.querySelectorAll('svg.equity-curve polyline.equity')]
              .every(l => l.getAttribute('points').split(' ').length >= 3)""",
        timeout=30_000,
    )
    assert await page.locator("svg.equity-curve line.starting-cash").count() == PORTFOLIOS
    assert await page.locator("#jobs tbody tr").count() == 6
    snapshot_row = page.locator("#jobs tbody tr[data-job='portfolio_snapshot']")
    assert "1 (0 failed)" in await snapshot_row.inner_text()
    await screenshot(page, "dashboard-demo-day")

    # An anonymous halt is refused, and nothing is appended.
    await page.click("#halt-all")
    await page.wait_for_function("document.getElementById('message').textContent.startsWith('refused')")
    assert "token" in await page.inner_text("#message")
    assert await rt.store.stream_version("trading-global") == -1

    # Signed in, a portfolio's halt is appended and its feed shows as a live notification.
    await page.fill("#token", OPERATOR_TOKEN)
    await page.click("#login button")
    await page.wait_for_function("document.getElementById('operator').textContent === 'operator'")
    async with hosted(["relay", "projections"], runtime=rt):
        await page.locator(".card[data-portfolio] button.operator-action").first.click()
        notice = page.locator("#notifications li.live-notification[data-kind='halt']")
        await notice.wait_for(timeout=20_000)
        assert "halted" in await notice.inner_text()
        await page.locator(".card .halted").first.wait_for(timeout=20_000)
    await screenshot(page, "dashboard-after-halt")
    assert errors == []
