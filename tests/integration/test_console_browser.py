"""The console in a real browser: Debian's Chromium driven by Playwright, nothing downloaded.

One browser per module, owned by one worker thread (Playwright's sync API belongs to the thread
that started it); each test runs its browser steps there with ``run_in_executor`` while its own
event loop serves the admin server and the receiver. Screenshots of every page go to
``$PGCOURIER_SCREENSHOTS`` (default: a pytest temporary directory); with
``PGCOURIER_DOCS_SCREENSHOTS=1`` the Overview and Endpoint detail ones are also written to docs/
for the README.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import BrowserContext, Page, Playwright, expect, sync_playwright

from pgcourier import ops
from tests.integration.console_helpers import backfill_history, populate
from tests.integration.helpers import TOKEN, Receiver, statuses, wait_until

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS = Path(__file__).resolve().parents[2] / "docs"
T = TypeVar("T")


@dataclass
class Browser:
    executor: ThreadPoolExecutor
    context: BrowserContext
    shots: Path

    async def run(self, steps: Callable[[Page], T]) -> T:
        """Run ``steps`` on a fresh page, logged out, in the browser's own thread."""

        def go() -> T:
            self.context.clear_cookies()
            page = self.context.new_page()
            try:
                return steps(page)
            finally:
                page.close()

        return await asyncio.get_running_loop().run_in_executor(self.executor, go)

    def shot(self, page: Page, name: str) -> None:
        path = self.shots / f"console-{name}.png"
        page.wait_for_load_state()  # never capture a document still being replaced
        page.screenshot(path=str(path), full_page=False)
        if os.environ.get("PGCOURIER_DOCS_SCREENSHOTS") == "1" and name in ("overview", "endpoint"):
            DOCS.mkdir(exist_ok=True)
            shutil.copyfile(path, DOCS / path.name)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    shots = Path(os.environ.get("PGCOURIER_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    shots.mkdir(parents=True, exist_ok=True)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chromium")
    profile = tempfile.mkdtemp(prefix="pgcourier-chromium-")

    def start() -> tuple[Playwright, BrowserContext]:
        playwright = sync_playwright().start()
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1280, "height": 860},
            timezone_id="Europe/Paris",
        )
        context.set_default_timeout(10_000)
        return playwright, context

    playwright, context = executor.submit(start).result()
    try:
        yield Browser(executor, context, shots)
    finally:

        def stop() -> None:
            context.close()
            playwright.stop()

        executor.submit(stop).result()
        executor.shutdown()
        shutil.rmtree(profile, ignore_errors=True)


def log_in(page: Page, base: str) -> None:
    page.goto(f"{base}/ui/")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Overview")


def serving(relay: Any, **overrides: Any) -> Any:
    return relay(admin_token=TOKEN, **overrides)


async def test_log_in_and_a_wrong_token_is_refused(browser: Any, relay: Any, dsn: Any) -> None:
    async with serving(relay) as rt:
        base = f"http://127.0.0.1:{rt.admin_port}"

        def steps(page: Page) -> None:
            page.goto(f"{base}/ui/endpoints")
            expect(page.locator("h1")).to_have_text("Log in")
            page.fill("input[name=token]", "not-the-token-not-the-token-not-the-token")
            page.click("button[type=submit]")
            expect(page.locator("p.error")).to_have_text("Wrong token.")
            browser.shot(page, "login")
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")
            # Back where the operator was going.
            expect(page.locator("h1")).to_have_text("Endpoints")
            page.click("text=Log out")
            expect(page.locator("h1")).to_have_text("Log in")

        await browser.run(steps)


async def test_a_failing_endpoint_shows_its_open_circuit_and_the_answer(
    browser: Any, relay: Any, conn: Any, receiver: Receiver
) -> None:
    world = await populate(conn, receiver, relay)
    bad = world["bad"]["id"]
    # An hour of earlier traffic, the failing endpoint failing for the last 12 minutes, for the
    # charts to draw.
    assert await backfill_history(conn, world["good"]["id"]) > 100
    assert await backfill_history(conn, bad, failing_for=12) > 100
    async with serving(relay) as rt:
        base = f"http://127.0.0.1:{rt.admin_port}"

        def steps(page: Page) -> None:
            log_in(page, base)
            expect(page.locator(".tile.bad .num")).to_have_text("1")  # one open circuit
            # One bar per minute of the hour, each with its tooltip.
            expect(page.locator("svg.chart > g")).to_have_count(60)
            browser.shot(page, "overview")
            page.click("nav >> text=Endpoints")
            row = page.locator("tr", has=page.locator(f"a[href='/ui/endpoints/{bad}']"))
            expect(row.locator(".badge.bad")).to_have_text("open")
            browser.shot(page, "endpoints")
            row.locator(f"a[href='/ui/endpoints/{bad}']").click()
            expect(page.locator(".tile.bad .num")).to_have_text("open")
            attempts = page.locator("table.attempts tbody tr")
            expect(attempts.first).to_contain_text("500")
            expect(attempts.first.locator("pre")).to_contain_text("nope")  # the receiver's body
            # Times are shown in the browser's zone, UTC kept for hovering.
            first_time = attempts.first.locator("time")
            expect(first_time).to_have_attribute("title", lambda_utc())
            assert "UTC+01:00" in first_time.inner_text()
            browser.shot(page, "endpoint")
            attempts.first.locator("a").first.click()
            expect(page.locator("h2", has_text="Every attempt")).to_be_visible()
            expect(page.locator("pre.payload")).to_contain_text("<script>")  # as text
            browser.shot(page, "event")
            page.click("nav >> text=Events")
            expect(page.locator("h1")).to_have_text("Events")
            browser.shot(page, "events")

        await browser.run(steps)


def lambda_utc() -> Any:
    import re

    return re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")


async def test_replaying_a_dead_letter_from_the_page_delivers_it_with_the_same_id(
    browser: Any, relay: Any, conn: Any, receiver: Receiver
) -> None:
    world = await populate(conn, receiver, relay)
    bad = world["bad"]["id"]
    receiver.script["/bad"] = []  # the receiver is fixed
    dead = await ops.list_dead(conn, ops.DeadFilter(endpoint_id=bad))
    letter = dead["data"][-1]
    before = len(receiver.on("/bad"))
    async with serving(relay) as rt:
        base = f"http://127.0.0.1:{rt.admin_port}"

        def steps(page: Page) -> None:
            log_in(page, base)
            # The circuit is open for an hour: disabling and enabling gives a fresh start.
            page.goto(f"{base}/ui/endpoints/{bad}")
            page.click("button:has-text('Disable')")
            expect(page.locator(".notice")).to_contain_text("Endpoint disabled")
            page.click("button:has-text('Enable')")
            expect(page.locator(".notice")).to_contain_text("Endpoint enabled")
            page.click("nav >> text=Dead letters")
            row = page.locator("tr", has=page.locator(f"input[value='{letter['id']}']"))
            row.locator("text=Replay…").click()
            expect(page.locator("h1")).to_have_text("Replay 1 dead letter?")
            browser.shot(page, "confirm")
            page.click("main form[method=post] button[type=submit]")
            expect(page.locator("h1")).to_have_text("Replayed 1 dead letter")

        await browser.run(steps)
        await receiver.wait_count(before + 1, "/bad")
    replayed = receiver.on("/bad")[before:]
    assert [r.webhook_id for r in replayed] == [letter["event_id"]]


async def test_a_bulk_replay_by_filter(
    browser: Any, relay: Any, conn: Any, receiver: Receiver
) -> None:
    world = await populate(conn, receiver, relay)
    bad = world["bad"]["id"]
    receiver.script["/bad"] = []
    dead = (await statuses(conn))["dead"]
    await ops.set_endpoint_enabled(conn, bad, False)
    await ops.set_endpoint_enabled(conn, bad, True)  # closes the circuit
    before = len(receiver.on("/bad"))
    async with serving(relay) as rt:
        base = f"http://127.0.0.1:{rt.admin_port}"

        def steps(page: Page) -> None:
            log_in(page, base)
            page.click("nav >> text=Dead letters")
            page.select_option("select[name=endpoint_id]", bad)
            page.fill("input[name=event_type]", "order.paid")
            page.click("button:has-text('Filter')")
            # The filter is a GET form: wait for the page it loads, or the shot and the click
            # below land on the unfiltered page that is going away (Chromium then refuses the
            # capture: "Unable to capture screenshot").
            expect(page).to_have_url(re.compile(r"[?&]event_type=order\.paid"))
            browser.shot(page, "dead-letters")
            page.click("button:has-text('Replay all matching')")
            expect(page.locator("h1")).to_have_text(f"Replay {dead} dead letters?")
            page.click("main form[method=post] button[type=submit]")
            expect(page.locator("h1")).to_have_text(f"Replayed {dead} dead letters")

        await browser.run(steps)
        await receiver.wait_count(before + dead, "/bad")

        async def none_dead() -> bool:
            return (await statuses(conn)).get("dead", 0) == 0

        await wait_until(none_dead)


async def test_a_form_without_its_csrf_token_is_refused(
    browser: Any, relay: Any, conn: Any, receiver: Any
) -> None:
    world = await populate(conn, receiver, relay)
    good = world["good"]["id"]
    async with serving(relay) as rt:
        base = f"http://127.0.0.1:{rt.admin_port}"

        def steps(page: Page) -> None:
            log_in(page, base)
            page.goto(f"{base}/ui/endpoints/{good}")
            page.evaluate(
                "document.querySelectorAll('input[name=csrf_token]').forEach(e => e.remove())"
            )
            page.click("button:has-text('Disable')")
            expect(page.locator("h1")).to_contain_text("Refused")
            expect(page.locator("p.error")).to_contain_text("CSRF token is missing or wrong")
            browser.shot(page, "csrf-refused")

        await browser.run(steps)
    assert await conn.fetchval("SELECT enabled FROM courier.endpoints WHERE id = $1", good)


async def test_send_a_test_event_shows_the_receivers_answer(
    browser: Any, relay: Any, conn: Any, receiver: Receiver
) -> None:
    target = await ops.create_endpoint(
        conn, url=receiver.url("/hook"), event_types=["never.*"], tenant="acme"
    )
    async with serving(relay) as rt:
        base = f"http://127.0.0.1:{rt.admin_port}"

        def steps(page: Page) -> None:
            log_in(page, base)
            page.click("nav >> text=Endpoints")
            row = page.locator("tr", has=page.locator(f"a[href='/ui/endpoints/{target['id']}']"))
            expect(row).to_contain_text("acme")  # the tenant column
            row.locator(f"a[href='/ui/endpoints/{target['id']}']").click()
            page.fill("input[name=event_type]", "invoice.paid")
            page.click("button:has-text('Send a test event')")
            expect(page.locator("h1")).to_have_text("Test event delivered")
            expect(page.locator("dd.status")).to_have_text("200")
            expect(page.locator("pre.response")).to_have_text("ok")  # the receiver's answer
            browser.shot(page, "test-send")
            page.click("text=Back to the endpoint")
            expect(page.locator("table.attempts .badge", has_text="test")).to_have_count(1)

        await browser.run(steps)
    [request] = receiver.requests
    assert request.path == "/hook"
    assert request.json["type"] == "invoice.paid"
