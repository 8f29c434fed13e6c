"""The dashboard: its snapshot, its event stream, and the page itself in a real headless browser.

The browser test drives Debian's chromium (``/usr/bin/chromium``; ``make test`` installs it
when missing) with Playwright. Every wait is Playwright's ``expect`` with a timeout.
Set ``AUTOGEN_HTTP_DASHBOARD_SCREENSHOT=docs/dashboard.png`` to refresh the picture in the docs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from autogen_core import AgentId, TopicId, TypePrefixSubscription, TypeSubscription
from playwright.async_api import Page, async_playwright, expect

from autogen_http_runtime import AgentNotFoundError, HttpAgentServer, RemoteAgentError
from autogen_http_runtime._host.core import RoutingCore
from autogen_http_runtime._ops.dashboard import snapshot

from .conftest import WorkerFactory
from .test_routing import SEND, frames, greeted, rpc
from .utils import TIMEOUT, Recorder, Text, Upper, bounded, owners

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = TIMEOUT * 1000


def test_snapshot_lists_workers_types_subscriptions_and_totals() -> None:
    router = RoutingCore()
    caller, target = greeted(router), greeted(router, "b")
    target.name = "b-worker"
    subscription = {"id": "s1", "kind": "type_prefix", "agent_type": "b", "topic": "news."}
    rpc(router, target, 9, "add_subscription", subscription=subscription)
    rpc(router, caller, 1, "send", **SEND)
    host_id = frames(target)[-1]["id"]
    router.handle_text(target, json.dumps({"jsonrpc": "2.0", "id": host_id, "result": {}}))
    rpc(router, caller, 2, "send", recipient={"type": "nobody", "key": "k"}, payload=SEND["payload"])

    snap = json.loads(json.dumps(snapshot(router)))  # it must be JSON as it is
    assert snap["accepting"] is True
    assert [w["name"] for w in snap["workers"]] == ["", "b-worker"]
    assert snap["workers"][1]["agent_types"] == ["b"] and snap["workers"][1]["subscriptions"] == 1
    assert snap["agent_types"] == [
        {
            "type": "b",
            "worker_id": target.worker_id,
            "replicas": [{"worker_id": target.worker_id, "calls": 1, "agent_ids": None}],
        }
    ]
    assert snap["subscriptions"] == [{"id": "s1", "kind": "type_prefix", "topic": "news.", "agent_type": "b"}]
    assert snap["totals"]["calls_routed"] == 1 and snap["totals"]["errors"] == 1
    assert snap["call_outcomes"]["ok"] == 1 and snap["latency"]["count"] == 1
    assert snap["errors_by_code"] == [{"code": -32001, "name": "AGENT_NOT_FOUND", "count": 1}]
    [error] = snap["recent_errors"]
    assert (error["name"], error["worker_id"], error["request_id"]) == (
        "AGENT_NOT_FOUND",
        caller.worker_id,
        2,
    )


async def test_errors_of_http_callers_are_recorded_under_their_identity_and_request_id(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    serving = await make_worker()
    await Upper.register(serving, "upper", Upper)
    payload = {"data_type": "Text", "data": {"content": "boom"}}
    upper, nobody = {"type": "upper", "key": "k"}, {"type": "nobody", "key": "k"}
    fine = {"data_type": "Text", "data": {"content": "fine"}}
    batch = [
        {"jsonrpc": "2.0", "id": "ok", "method": "send", "params": {"recipient": upper, "payload": fine}},
        {
            "jsonrpc": "2.0",
            "id": "nobody-here",
            "method": "send",
            "params": {"recipient": nobody, "payload": payload},
        },
        {"jsonrpc": "2.0", "id": 41, "method": "send", "params": {"recipient": upper, "payload": payload}},
    ]
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, trust_env=False) as http:
        answers = (await bounded(http.post("/v1/rpc", json=batch))).json()
    assert [a.get("error", {}).get("code") for a in answers] == [None, -32001, -32003]
    recent = {e["request_id"]: e for e in snapshot(server.service.core)["recent_errors"]}
    assert set(recent) == {"nobody-here", 41}  # the client's ids, not positions in the batch
    assert {e["worker_id"] for e in recent.values()} == {"http (anonymous)"}
    assert recent["nobody-here"]["name"] == "AGENT_NOT_FOUND" and recent[41]["name"] == "REMOTE_ERROR"


async def test_event_stream_sends_snapshots_and_ends_when_the_host_stops(server: HttpAgentServer) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=TIMEOUT) as http:
        url = f"{server.url}/dashboard/events?interval=0.1"
        async with http.stream("GET", url) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.aiter_lines()

            async def next_snapshot() -> dict[str, Any]:
                async for line in lines:
                    if line.startswith("data: "):
                        return dict(json.loads(line[6:]))
                raise AssertionError("the stream ended")

            first, second = await bounded(next_snapshot()), await bounded(next_snapshot())
            assert first["accepting"] and second["time"] > first["time"]
            # An open dashboard must not hold up a shutdown (uvicorn would wait 5 s for it).
            loop = asyncio.get_running_loop()
            began = loop.time()
            stopping = asyncio.ensure_future(server.stop(grace=1))
            rest = [line async for line in lines if line.startswith("data: ")]
            await bounded(stopping)
            assert loop.time() - began < 3
            assert json.loads(rest[-1][6:])["accepting"] is False


@pytest.fixture
def chromium() -> Path:
    assert CHROMIUM.exists(), "chromium is missing: `make test` installs it (apt-get install chromium)"
    return CHROMIUM


@pytest.fixture
async def page(chromium: Path) -> Any:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield await browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            await browser.close()


async def test_dashboard_shows_workers_and_counters_live(
    page: Page, server: HttpAgentServer, make_worker: WorkerFactory, tmp_path: Path
) -> None:
    await page.goto(f"{server.url}/dashboard?interval=0.2")
    await expect(page.locator("#status")).to_have_text("live", timeout=WAIT_MS)
    await expect(page.locator("#stat-workers")).to_have_text("0", timeout=WAIT_MS)
    await expect(page.locator("#workers tbody")).to_contain_text("No worker connected.", timeout=WAIT_MS)

    # A worker connects and registers: the page lists it and its agent type.
    serving = await make_worker(name="upper-worker")
    await Upper.register(serving, "upper", Upper)
    row = page.locator(
        f'#workers tbody tr[data-worker-id="{owners(server.service.core)["upper"].worker_id}"]'
    )
    await expect(row).to_contain_text("upper-worker", timeout=WAIT_MS)
    await expect(row).to_contain_text("upper", timeout=WAIT_MS)
    await expect(page.locator("#stat-workers")).to_have_text("1", timeout=WAIT_MS)
    await expect(page.locator("#agent-types tbody")).to_contain_text("upper", timeout=WAIT_MS)

    inbox: asyncio.Queue[Any] = asyncio.Queue()
    listening = await make_worker(name="recorder-worker")
    await Recorder.register(listening, "recorder", lambda: Recorder(inbox))
    await listening.add_subscription(TypeSubscription(topic_type="news", agent_type="recorder"))
    await listening.add_subscription(
        TypePrefixSubscription(topic_type_prefix="alerts.", agent_type="recorder")
    )
    caller = await make_worker(name="orchestrator")
    await expect(page.locator("#stat-workers")).to_have_text("3", timeout=WAIT_MS)
    await expect(page.locator("#subscriptions tbody")).to_contain_text("alerts.*", timeout=WAIT_MS)

    # Calls: the counters move.
    for n in range(5):
        assert await bounded(caller.send_message(Text(f"m{n}"), AgentId("upper", "k"))) == Text(f"M{n}")
    await expect(page.locator("#stat-calls-routed")).to_have_text("5", timeout=WAIT_MS)
    # Its calls made / served since it connected, then those in flight / being served now.
    await expect(row.locator("td").nth(5)).to_have_text("0 / 5", timeout=WAIT_MS)
    await expect(row.locator("td").nth(6)).to_have_text("0 / 0", timeout=WAIT_MS)
    await expect(page.locator('#outcomes tr[data-outcome="ok"]')).to_contain_text("5", timeout=WAIT_MS)

    # Errors: counted by code, and the latest shown with their message.
    with pytest.raises(RemoteAgentError):
        await bounded(caller.send_message(Text("boom"), AgentId("upper", "k")))
    with pytest.raises(AgentNotFoundError):
        await bounded(caller.send_message(Text("x"), AgentId("nobody", "k")))
    await expect(page.locator("#stat-errors")).to_have_text("2", timeout=WAIT_MS)
    await expect(page.locator("#recent-errors tbody")).to_contain_text("ValueError: kaboom", timeout=WAIT_MS)
    await expect(page.locator('#errors-by-code tr[data-code="-32001"]')).to_contain_text("AGENT_NOT_FOUND")
    # An HTTP caller's error: shown under its identity and its own request id.
    request = {
        "jsonrpc": "2.0",
        "id": "web-1",
        "method": "agent_metadata",
        "params": {"recipient": {"type": "nobody", "key": "k"}},
    }
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, trust_env=False) as http:
        assert (await bounded(http.post("/v1/rpc", json=request))).json()["error"]["code"] == -32001
    http_error = page.locator("#recent-errors tbody tr").first
    await expect(http_error).to_contain_text("http (anonymous)", timeout=WAIT_MS)
    await expect(http_error).to_contain_text("web-1", timeout=WAIT_MS)

    # Rates: under a steady load, calls and events per second are above zero.
    stop_load = asyncio.Event()

    async def load() -> None:
        n = 0
        while not stop_load.is_set():
            await caller.send_message(Text("load"), AgentId("upper", "k"))
            await caller.publish_message(Text("tick"), TopicId("news", "s"))
            await inbox.get()
            n += 1

    loading = asyncio.ensure_future(load())
    try:
        positive = re.compile(r"^[1-9]\d*(\.\d)?$")
        await expect(page.locator("#stat-calls-rate")).to_have_text(positive, timeout=WAIT_MS)
        await expect(page.locator("#stat-events-rate")).to_have_text(positive, timeout=WAIT_MS)
        screenshot = os.environ.get("AUTOGEN_HTTP_DASHBOARD_SCREENSHOT", str(tmp_path / "dashboard.png"))
        assert len(await page.screenshot(path=screenshot, full_page=True)) > 10_000
    finally:
        stop_load.set()
        await bounded(loading)

    # A worker leaves: the page drops it.
    await bounded(listening.stop())
    await expect(page.locator("#stat-workers")).to_have_text("2", timeout=WAIT_MS)
    await expect(page.locator("#workers tbody")).not_to_contain_text("recorder-worker", timeout=WAIT_MS)
