"""The dashboard over HTTP: login, cookies, CSRF, CSP, team scoping and escaping (the browser tier is tests/browser)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import httpx
import msgspec
import pytest

from lap_server.dashboard import LOGIN_ATTEMPTS
from tests.server.fixtures import KEY

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager

pytestmark = pytest.mark.anyio

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
AGENT = {"harness": "script", "model": "m"}
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found, "no CSRF field in the page"
    return found.group(1)


@pytest.fixture
async def browser(api: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the same server with no API key: what a browser sends (cookies only)."""
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
        yield client


async def log_in(client: httpx.AsyncClient, key: str) -> str:
    """Log in with `key`; return the session's CSRF token."""
    form = await client.get("/login")
    response = await client.post("/login", data={"csrf": csrf_of(form.text), "key": key})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/agents"
    return csrf_of((await client.get("/agents")).text)


async def new_team_key(api: httpx.AsyncClient, name: str) -> tuple[str, str]:
    team = (await api.post("/api/teams", json={"name": name})).json()
    key = (await api.post("/api/keys", json={"name": f"{name}-key", "team_id": team["id"]})).json()
    return team["id"], key["key"]


async def test_pages_need_a_login(browser: httpx.AsyncClient) -> None:
    for path in ("/", "/agents", "/sessions", "/sessions/ses_x"):
        response = await browser.get(path)
        assert response.status_code == 303
        assert response.headers["location"] in ("/login", "/agents")
    assert (await browser.get("/sessions/ses_x/events")).status_code == 401
    assert (await browser.get("/sessions/live")).status_code == 401
    # The API does not take the dashboard's cookie, nor the dashboard an API key.
    await log_in(browser, KEY)
    assert (await browser.get("/api/agents")).status_code == 401
    async with httpx.AsyncClient(base_url=browser.base_url, headers={"Authorization": f"Bearer {KEY}"}) as keyed:
        assert (await keyed.get("/agents")).status_code == 303


async def test_login_sets_a_safe_cookie_and_shows_the_user(browser: httpx.AsyncClient) -> None:
    form = await browser.get("/login")
    assert form.status_code == 200
    response = await browser.post("/login", data={"csrf": csrf_of(form.text), "key": KEY})
    assert response.status_code == 303
    cookie = next(v for v in response.headers.get_list("set-cookie") if v.startswith("lap_session="))
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= flags
    assert "secure" not in flags  # no https BASE_URL: a browser would not send it back over http
    assert KEY not in cookie
    page = await browser.get("/agents")
    assert page.status_code == 200
    assert '<span class="user" id="user-name">admin</span>' in page.text


async def test_every_page_has_a_strict_csp(browser: httpx.AsyncClient) -> None:
    csp = (await browser.get("/login")).headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    await log_in(browser, KEY)
    for path in ("/agents", "/sessions", "/static/dashboard.js"):
        response = await browser.get(path)
        assert response.headers["content-security-policy"] == csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "<script>" not in response.text  # the pages' only script is /static/dashboard.js


async def test_a_bad_key_is_refused(browser: httpx.AsyncClient) -> None:
    form = await browser.get("/login")
    for key in ("wrong-key-123", "lapk_abc_def", KEY + "x"):
        response = await browser.post("/login", data={"csrf": csrf_of(form.text), "key": key})
        assert response.status_code == 401
        assert "Invalid key." in response.text
        assert "lap_session=" not in response.headers.get("set-cookie", "")
    assert (await browser.get("/agents")).status_code == 303


async def test_login_is_rate_limited(browser: httpx.AsyncClient) -> None:
    form = await browser.get("/login")
    for _ in range(LOGIN_ATTEMPTS):
        response = await browser.post("/login", data={"csrf": csrf_of(form.text), "key": "wrong-key-123"})
        assert response.status_code == 401
    response = await browser.post("/login", data={"csrf": csrf_of(form.text), "key": KEY})
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert "lap_session=" not in response.headers.get("set-cookie", "")


async def test_forms_without_the_csrf_token_are_refused(browser: httpx.AsyncClient, api: httpx.AsyncClient) -> None:
    await browser.get("/login")
    assert (await browser.post("/login", data={"key": KEY})).status_code == 403
    assert (await browser.post("/login", data={"key": KEY, "csrf": "forged"})).status_code == 403
    token = await log_in(browser, KEY)
    agent = (await api.post("/api/agents", json={"name": "a", "harness": "script", "model": "m"})).json()
    session = (await api.post("/api/sessions", json={"agent_id": agent["id"]})).json()
    posts = {
        "/agents": {"name": "b", "harness": "script", "model": "m"},
        f"/agents/{agent['id']}/delete": {},
        "/sessions": {"agent_id": agent["id"]},
        f"/sessions/{session['id']}/messages": {"text": "hello"},
        f"/sessions/{session['id']}/abort": {},
        "/logout": {},
    }
    for path, fields in posts.items():
        for bad in ({}, {"csrf": "forged"}, {"csrf": token[:-2] + "xx"}):
            response = await browser.post(path, data={**fields, **bad})
            assert response.status_code == 403, path
    assert [a["name"] for a in (await api.get("/api/agents")).json()["items"]] == ["a"]
    assert (await api.get(f"/api/sessions/{session['id']}/messages")).json() == []
    assert (await browser.get("/agents")).status_code == 200  # still logged in
    # The same forms with the token work.
    assert (await browser.post(f"/agents/{agent['id']}/delete", data={"csrf": token})).status_code == 409
    assert (await browser.post("/logout", data={"csrf": token})).status_code == 303
    assert (await browser.get("/agents")).status_code == 303


async def test_a_forged_or_tampered_cookie_is_no_login(browser: httpx.AsyncClient) -> None:
    await log_in(browser, KEY)
    value = browser.cookies["lap_session"]
    payload, _, mac = value.partition(".")
    for forged in (f"{payload}.{mac[:-2]}AA", f"{payload[:-2]}AA.{mac}", "x", KEY):
        browser.cookies.clear()
        browser.cookies.set("lap_session", forged)
        assert (await browser.get("/agents")).status_code == 303


async def test_https_base_url_makes_the_cookie_secure(
    serve: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
) -> None:
    async with serve(BASE_URL="https://lap.example") as api:
        async with httpx.AsyncClient(base_url=api.base_url) as client:
            form = await client.get("/login")
            login_cookie = form.headers["set-cookie"]
            assert login_cookie.startswith("__Host-lap_login=")
            client.cookies.set("__Host-lap_login", login_cookie.split(";")[0].partition("=")[2])
            response = await client.post("/login", data={"csrf": csrf_of(form.text), "key": KEY})
            assert response.status_code == 303
            cookie = next(v for v in response.headers.get_list("set-cookie") if v.startswith("__Host-lap_session="))
            assert "secure" in {part.strip().lower() for part in cookie.split(";")}


async def test_the_admin_is_shown_as_ui_username(
    serve: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
) -> None:
    async with serve(UI_USERNAME="Ada <b>Lovelace</b>") as api:
        async with httpx.AsyncClient(base_url=api.base_url) as client:
            await log_in(client, KEY)
            page = (await client.get("/agents")).text
            assert 'id="user-name">Ada &lt;b&gt;Lovelace&lt;/b&gt;<' in page


async def test_a_team_key_sees_its_own_team_only(browser: httpx.AsyncClient, api: httpx.AsyncClient) -> None:
    red, red_key = await new_team_key(api, "red")
    blue, _blue_key = await new_team_key(api, "blue")
    red_agent = (await api.post("/api/agents", json={**AGENT, "name": "red-agent", "team_id": red})).json()
    blue_agent = (await api.post("/api/agents", json={**AGENT, "name": "blue-agent", "team_id": blue})).json()
    blue_id = (await api.post("/api/sessions", json={"agent_id": blue_agent["id"]})).json()["id"]
    red_session = (await api.post("/api/sessions", json={"agent_id": red_agent["id"]})).json()

    token = await log_in(browser, red_key)
    agents = await browser.get("/agents")
    assert "red-agent" in agents.text
    assert "blue-agent" not in agents.text
    assert 'id="user-name">red · red-key<' in agents.text
    sessions = await browser.get("/sessions")
    assert red_session["id"] in sessions.text
    assert blue_id not in sessions.text
    assert (await browser.get(f"/sessions/{blue_id}")).status_code == 404
    assert (await browser.get(f"/sessions/{blue_id}/events")).status_code == 404
    for path in (f"/sessions/{blue_id}/messages", f"/sessions/{blue_id}/abort", f"/agents/{blue_agent['id']}/delete"):
        assert (await browser.post(path, data={"csrf": token, "text": "hi"})).status_code == 404, path
    assert (await browser.post("/sessions", data={"csrf": token, "agent_id": blue_agent["id"]})).status_code == 404
    # A team key's agents go to its team, whatever the form says.
    form = {"csrf": token, "name": "made", "harness": "script", "model": "m", "team_id": blue}
    assert (await browser.post("/agents", data=form)).status_code == 303
    made = (await api.get("/api/agents", params={"search": "made"})).json()["items"]
    assert [a["team_id"] for a in made] == [red]
    # Deleting the key ends its dashboard login.
    keys = (await api.get("/api/keys")).json()
    red_key_id = next(k["id"] for k in (keys["items"] if isinstance(keys, dict) else keys) if k["team_id"] == red)
    assert (await api.delete(f"/api/keys/{red_key_id}")).status_code == 204
    assert (await browser.get("/agents")).status_code == 303


async def test_names_and_text_come_back_escaped(browser: httpx.AsyncClient, api: httpx.AsyncClient) -> None:
    token = await log_in(browser, KEY)
    refused = await browser.post("/agents", data={"csrf": token, "name": SCRIPT, "harness": "script", "model": "m"})
    assert refused.status_code == 422
    assert SCRIPT not in refused.text
    form = {"csrf": token, "name": "x", "harness": "script", "model": IMG, "prompt": f"{SCRIPT}{IMG}"}
    assert (await browser.post("/agents", data=form)).status_code == 303
    page = (await browser.get("/agents")).text
    assert SCRIPT not in page
    assert IMG not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    agent = (await api.get("/api/agents")).json()["items"][0]
    created = await browser.post("/sessions", data={"csrf": token, "agent_id": agent["id"], "title": SCRIPT + IMG})
    assert created.status_code == 303
    for path in ("/sessions", created.headers["location"]):
        page = (await browser.get(path)).text
        assert SCRIPT not in page
        assert IMG not in page
        assert "&lt;script&gt;" in page


async def test_chat_streams_the_reply(browser: httpx.AsyncClient) -> None:
    token = await log_in(browser, KEY)
    form = {"csrf": token, "name": "chatty", "harness": "script", "model": "m"}
    assert (await browser.post("/agents", data=form)).status_code == 303
    page = (await browser.get("/agents")).text
    agent_id = re.search(r'data-agent-id="([^"]+)"', page)
    assert agent_id
    created = await browser.post("/sessions", data={"csrf": token, "agent_id": agent_id.group(1)})
    chat = created.headers["location"]
    sent = await browser.post(f"{chat}/messages", data={"csrf": token, "text": SCRIPT})
    assert sent.status_code == 303
    events = []
    async with browser.stream("GET", f"{chat}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                record = msgspec.json.decode(line.removeprefix("data: "))
                events.append(record["event"])
                if record["event"]["type"] == "turn_end":
                    break
    assert events[0] == {"type": "user_message", "text": SCRIPT}
    assert SCRIPT in "".join(e["text"] for e in events if e["type"] == "text_delta")
    # Resuming after the user's message (Last-Event-ID) leaves it out.
    async with browser.stream("GET", f"{chat}/events", headers={"Last-Event-ID": "1"}) as stream:
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                assert msgspec.json.decode(line.removeprefix("data: "))["seq"] == 2
                break
