"""Per-caller rate limits: 429 in the error shape with Retry-After, a bucket per key, per address without one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lap_core import ConfigError
from lap_server.ratelimit import RateLimiter

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager

    Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]

pytestmark = pytest.mark.anyio


def _as(api: httpx.AsyncClient, key: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=str(api.base_url), headers=headers, timeout=30)


def _assert_limited(response: httpx.Response, limit: int) -> None:
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60 / limit
    error = response.json()["error"]
    assert error["code"] == "rate_limited"
    assert error["details"] == {"limit": limit, "window_seconds": 60, "retry_after": retry_after}
    assert response.headers["x-request-id"]


def test_the_bucket_refills_at_the_limit_per_minute() -> None:
    now = [0.0]
    limiter = RateLimiter(3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0, 0, 0]  # a burst of the whole minute's worth
    assert limiter.take("a") == pytest.approx(20)
    assert limiter.take("b") == 0  # every caller has a bucket of its own
    now[0] = 19.0
    assert limiter.take("a") == pytest.approx(1)
    now[0] = 20.0
    assert limiter.take("a") == 0
    assert limiter.take("a") > 0
    now[0] = 1000.0  # long idle: full again, and no more than full
    assert [limiter.take("a") for _ in range(4)][-1] > 0


async def test_each_key_has_its_own_limit(serve: Serve) -> None:
    limit = 4
    async with serve(LAP_RATE_LIMIT=str(limit)) as api:
        first = (await api.post("/api/keys", json={"name": "a"})).json()["key"]  # master: 1
        second = (await api.post("/api/keys", json={"name": "b"})).json()["key"]  # master: 2
        async with _as(api, first) as a, _as(api, second) as b:
            for _ in range(limit):
                assert (await a.get("/api/agents")).status_code == 200
            _assert_limited(await a.get("/api/agents"), limit)
            assert (await b.get("/api/agents")).status_code == 200  # another key, another bucket

        metrics = (await api.get("/metrics")).text  # master: 3
        refused = [
            s.value
            for family in text_string_to_metric_families(metrics)
            for s in family.samples
            if s.name == "lap_rate_limited_total" and s.labels == {"kind": "key"}
        ]
        assert refused == [1]
        assert (await api.get("/api/agents")).status_code == 200  # master: 4
        _assert_limited(await api.get("/api/agents"), limit)


async def test_callers_without_a_key_are_limited_by_address(serve: Serve) -> None:
    limit = 2
    async with serve(LAP_RATE_LIMIT=str(limit)) as api, _as(api, None) as anonymous, _as(api, "lapk_x_y") as bad:
        assert (await anonymous.get("/healthz")).status_code == 200
        assert (await bad.get("/api/agents")).status_code == 401  # a failed key counts against the address
        _assert_limited(await anonymous.get("/healthz"), limit)
        _assert_limited(await bad.get("/api/agents"), limit)  # its failures draw from the address too
        assert (await api.get("/api/agents")).status_code == 200  # the master key is not that address


async def test_a_limit_of_zero_disables_limits(serve: Serve) -> None:
    async with serve(LAP_RATE_LIMIT="0") as api:
        for _ in range(30):
            assert (await api.get("/healthz")).status_code == 200


async def test_a_negative_limit_is_a_configuration_error(serve: Serve) -> None:
    with pytest.raises(ConfigError, match="LAP_RATE_LIMIT"):
        async with serve(LAP_RATE_LIMIT="-1"):
            pass
