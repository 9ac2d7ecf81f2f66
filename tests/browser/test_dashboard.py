"""The dashboard in Chromium: log in, agents, sessions, a streamed chat, reload, abort, XSS, two teams."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.server import MASTER_KEY, LiveServer

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect

XSS = ["<script>alert(1)</script>", "<img src=x onerror=alert(2)>"]
WAIT = 30_000  # ms: generous, the machine is shared


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A page in a fresh browser context (its own cookies) that fails the test on any dialog."""
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    context.close()
    assert dialogs == [], f"a script ran: {dialogs}"


def log_in(page: Any, server: LiveServer, key: str) -> None:
    page.goto(f"{server.url}/agents")
    assert page.url.endswith("/login")
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/agents")


def create_agent(page: Any, name: str, prompt: str = "") -> None:
    page.fill("#agent-name", name)
    page.select_option("#agent-harness", "script")
    page.fill("#agent-model", "fake-model")
    page.fill("#agent-prompt", prompt)
    page.click("#new-agent button[type=submit]")
    page.wait_for_selector(f"li[data-agent-id] .name:text-is('{name}')")


def start_chat(page: Any, server: LiveServer, agent: str) -> None:
    page.locator("li[data-agent-id]", has_text=agent).locator("text=Start session").click()
    page.wait_for_url(re.compile(r".*/sessions/ses_[^/]+$"))


def send(page: Any, text: str) -> None:
    page.fill("#message", text)
    page.click("#send button[type=submit]")


def reply(page: Any) -> str:
    return str(page.locator(".msg.agent").last.text_content())


def test_log_in_create_an_agent_and_chat(page: Any, server: LiveServer) -> None:
    log_in(page, server, MASTER_KEY)
    assert page.text_content("#user-name") == "admin"
    create_agent(page, "helper")
    start_chat(page, server, "helper")
    send(page, "stream: 15")
    page.wait_for_selector(".msg.user:text-is('stream: 15')")
    expect(page.locator(".msg.agent")).to_contain_text("line 1")
    assert "line 15" not in reply(page)  # streamed: the first lines are shown before the last is written
    expect(page.locator(".msg.agent")).to_contain_text("line 15")
    assert reply(page) == "".join(f"line {i}\n" for i in range(1, 16))
    page.wait_for_selector("#session-status:text-is('ready')")
    # A tool call and its result are a collapsible step.
    send(page, "run: echo from-the-tool")
    step = page.locator("details.step.tool").last
    step.wait_for()
    assert not step.evaluate("node => node.open")
    step.locator("summary").click()
    page.wait_for_selector("details.step.tool pre.tool-output:has-text('from-the-tool')")
    # The sessions page lists it, its status live.
    page.click("nav >> text=Sessions")
    page.wait_for_selector("li[data-session-id] .status:text-is('ready')")


def test_a_reload_mid_stream_resumes(page: Any, server: LiveServer) -> None:
    log_in(page, server, MASTER_KEY)
    create_agent(page, "streamer")
    start_chat(page, server, "streamer")
    send(page, "stream: 40")
    expect(page.locator(".msg.agent")).to_contain_text("line 3")
    page.reload()
    expect(page.locator(".msg.agent")).to_contain_text("line 40")
    assert reply(page) == "".join(f"line {i}\n" for i in range(1, 41))  # every line once, in order
    assert page.locator(".msg.user").count() == 1


def test_abort(page: Any, server: LiveServer) -> None:
    log_in(page, server, MASTER_KEY)
    create_agent(page, "sleeper")
    start_chat(page, server, "sleeper")
    send(page, "hang")
    page.wait_for_selector("#session-status:text-is('running')")
    page.click("#abort button")
    page.wait_for_selector(".note.error:has-text('turn aborted')")
    page.wait_for_selector("#session-status:text-is('ready')")


def test_xss_stays_text(page: Any, server: LiveServer) -> None:
    log_in(page, server, MASTER_KEY)
    create_agent(page, "safe", prompt="".join(XSS))
    assert page.locator("li[data-agent-id] .prompt").text_content() == "".join(XSS)
    start_chat(page, server, "safe")
    for text in XSS:
        send(page, text)
        expect(page.locator(".msg.agent").last).to_contain_text(text)
    assert page.locator("#chat img, #chat script").count() == 0
    assert page.locator(".msg.user").all_text_contents() == XSS
    # A session's title too.
    page.goto(f"{server.url}/sessions")
    page.fill("#session-title", XSS[1])
    page.click("#new-session button[type=submit]")
    page.wait_for_url(re.compile(r".*/sessions/ses_[^/]+$"))
    assert page.text_content("h1") == XSS[1]
    page.goto(f"{server.url}/sessions")
    assert page.locator("main img, main script").count() == 0


def test_two_teams_cannot_see_each_other(chromium: Any, server: LiveServer) -> None:
    _red, red_key = server.team_key("red")
    _blue, blue_key = server.team_key("blue")
    pages = {}
    for team, key in (("red", red_key), ("blue", blue_key)):
        context = chromium.new_context()
        pages[team] = context.new_page()
        pages[team].set_default_timeout(WAIT)
        log_in(pages[team], server, key)
        assert pages[team].text_content("#user-name") == f"{team} · {team}-key"
        create_agent(pages[team], f"{team}-agent")
        start_chat(pages[team], server, f"{team}-agent")
    blue_chat = pages["blue"].url
    red = pages["red"]
    red.goto(f"{server.url}/agents")
    assert red.locator("li[data-agent-id] .name").all_text_contents() == ["red-agent"]
    red.goto(f"{server.url}/sessions")
    assert red.locator("li[data-session-id]").count() == 1
    response = red.goto(blue_chat)
    assert response is not None
    assert response.status == 404
    for page in pages.values():
        page.context.close()
