"""Metering in the LLM proxy: each model call recorded once, team budgets checked before a call goes out.

`Meter.admit` runs before a request is forwarded: it refuses a team over its monthly budget (402
`budget_exceeded`, and a `budget_exceeded` error note in the session's log, at most one a minute
per session) and says whether LAP must ask for the usage of a streamed chat completion itself.
`MeteredCall.relay` passes the answer on (`answer.AnswerReader`) and records the call's
`UsageRecord` before the bytes that carry its usage go on to the harness: a proxy that dies
before that never recorded the call, and the harness never saw its usage; one that dies after
recorded it. The record's id, made once per call, is its idempotency key, so a retried write is
no second call. An answer the harness stops reading is still read to its end (`DRAIN_TIMEOUT`),
so its usage is recorded: an agent cannot hide a call by hanging up. The cost is the gateway's
`x-litellm-response-cost` header when it sends one (unstreamed answers), else the `cost` LiteLLM
puts in the usage block. `UsageCounters` count tokens, cost and calls per team for `/metrics`.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import TYPE_CHECKING

import anyio
import httpx
import msgspec
import structlog

from lap_core._errors import NotFound, StoreError
from lap_core._events import Error
from lap_core._models import UsageRecord, new_id, utcnow
from lap_core._vault.answer import AnswerReader, Tokens, parse_cost
from lap_core._vault.replies import Refusal

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from datetime import datetime

    from lap_core._events import SessionEvent
    from lap_core._store import SessionStore
    from lap_core._vault.answer import Api
    from lap_core._vault.body import RequestFields
    from lap_core._vault.proxy import LLMScope

    Note = Callable[[str, SessionEvent], Awaitable[None]]

log = structlog.get_logger("lap.vault")

DRAIN_TIMEOUT = 120.0
"""Seconds an answer the harness stopped reading is still read, to learn its usage."""
NOTE_INTERVAL = 60.0
"""Seconds between two `budget_exceeded` notes in one session's log (refusals in between are not noted)."""
RECORD_ATTEMPTS = (0.0, 0.5, 2.0)
"""Delays before each attempt to write a call's record (the same id each time: never counted twice)."""
INCLUDE_USAGE = b',"stream_options":{"include_usage":true}'
OUTCOMES = ("recorded", "no_usage", "error", "cut", "budget_exceeded", "unrecorded")
"""What became of a model call: counted by `lap_llm_calls_total`'s `outcome`."""
_APIS: dict[str, Api] = {"/chat/completions": "chat", "/responses": "responses", "/messages": "messages"}


def api_of(path: str) -> Api | None:
    """Return the API of a model route (`/v1` optional), None for a route that is no model call."""
    return _APIS.get(path.removeprefix("/v1") if path.startswith("/v1/") else path)


class UsageCounters:
    """What this process's proxy metered, per team: tokens by kind, cost, calls by outcome."""

    def __init__(self) -> None:
        self.tokens: Counter[tuple[str, str]] = Counter()
        self.cost_usd: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[tuple[str, str]] = Counter()

    def count(self, team_id: str, outcome: str, tokens: Tokens | None = None) -> None:
        """Count one call of a team, with what it used."""
        self.calls[team_id, outcome] += 1
        if tokens is not None:
            for kind, value in (("input", tokens.input), ("output", tokens.output), ("cached", tokens.cached)):
                self.tokens[team_id, kind] += value
            if tokens.cost is not None:
                self.cost_usd[team_id] += tokens.cost


def month_start(now: datetime) -> datetime:
    """Return the start of `now`'s calendar month (budgets count from there)."""
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class Meter:
    """Checks budgets and records model calls for one proxy (see the module docstring)."""

    def __init__(self, store: SessionStore, note: Note | None, counters: UsageCounters) -> None:
        self._store = store
        self._note = note
        self.counters = counters
        self._noted: dict[str, float] = {}  # session -> when its last budget note was made

    async def admit(self, session_id: str, scope: LLMScope, path: str, fields: RequestFields) -> MeteredCall | None:
        """Return the metering of a request about to be forwarded (None: not a model call).

        Raises:
            Refusal: 402 over budget, 400 a streamed chat completion that turns usage off, 503 no store.
        """
        api = api_of(path)
        if api is None:
            return None
        hide_usage = False
        if api == "chat" and fields.stream is True:
            options = fields.stream_options
            if options is None or options is msgspec.UNSET:
                hide_usage = True  # LAP asks for the usage; the harness will not see it
            elif options.include_usage is not True:
                message = "LAP meters every model call: leave stream_options out or set include_usage to true"
                raise Refusal(400, "usage_required", message)
        try:
            over = await self.over_budget(scope.team_id)
        except StoreError as error:
            log.warning("vault.store_unavailable", error=str(error))
            raise Refusal(503, "unavailable", "LAP cannot check this team's budget right now; retry") from None
        if over is not None:
            self.counters.count(scope.team_id, "budget_exceeded")
            log.warning("vault.budget_exceeded", team_id=scope.team_id)
            await self._note_budget(session_id, over)
            raise Refusal(402, "budget_exceeded", over)
        return MeteredCall(self, scope, session_id, fields.model or "", api, hide_usage=hide_usage)

    async def over_budget(self, team_id: str) -> str | None:
        """Return why a team may not call a model now (its month's budget is used up), else None."""
        try:
            team = await self._store.get_team(team_id)
        except NotFound:
            return None
        budget = team.budget
        if budget.tokens_per_month is None and budget.usd_per_month is None:
            return None
        (used,) = await self._store.usage_totals(team_id=team_id, since=month_start(utcnow()))
        tokens = used.input_tokens + used.output_tokens
        if budget.tokens_per_month is not None and tokens >= budget.tokens_per_month:
            spent = f"used {tokens:,} of its {budget.tokens_per_month:,} tokens"
        elif budget.usd_per_month is not None and used.cost_usd >= budget.usd_per_month:
            spent = f"spent ${used.cost_usd:,.4f} of its ${budget.usd_per_month:,.2f}"
        else:
            return None
        return f"model budget used up: team {team.name!r} has {spent} this month (UTC); an admin can raise it"

    async def _note_budget(self, session_id: str, message: str) -> None:
        now = time.monotonic()
        if self._note is None or now - self._noted.get(session_id, -NOTE_INTERVAL) < NOTE_INTERVAL:
            return
        self._noted = {s: at for s, at in self._noted.items() if now - at < NOTE_INTERVAL}
        self._noted[session_id] = now
        try:
            await self._note(session_id, Error(code="budget_exceeded", message=message))
        except Exception:
            log.warning("vault.note_failed", exc_info=True)

    async def record(self, record: UsageRecord) -> bool:
        """Write a call's record, trying again on a store error; return whether it is stored."""
        for delay in RECORD_ATTEMPTS:
            await anyio.sleep(delay)
            try:
                await self._store.record_usage(record)  # False: stored already by an earlier attempt
            except StoreError as error:
                log.warning("usage.record_failed", call_id=record.id, error=str(error))
                continue
            return True
        return False


class MeteredCall:
    """One model call on its way through the proxy: relays its answer and records it once."""

    def __init__(
        self, meter: Meter, scope: LLMScope, session_id: str, model: str, api: Api, *, hide_usage: bool
    ) -> None:
        self._meter = meter
        self._scope = scope
        self._session_id = session_id
        self._model = model
        self.api = api
        self.hide_usage = hide_usage
        self._id = new_id("use")
        self.outcome: str | None = None
        self.tokens: Tokens | None = None
        """What the call used, once its usage was read (the proxy's span reports it)."""

    async def relay(self, status: int, headers: httpx.Headers, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Yield the answer's bytes to pass on, recording the call before those that carry its usage."""
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if status >= 400 or content_type not in ("text/event-stream", "application/json"):
            async for chunk in chunks:
                yield chunk
            if status >= 400:
                self._end("error")
            else:
                await self._record(None)
            return
        cost = parse_cost(headers.get("x-litellm-response-cost"))
        streamed = content_type == "text/event-stream"
        reader = AnswerReader(self.api, streamed=streamed, hide_usage=self.hide_usage and streamed)
        async for chunk in chunks:
            out = reader.feed(chunk)
            if reader.usage is not None and self.outcome is None:
                await self._record(reader.usage, cost)
            if out:
                yield out
        out = reader.end()
        if self.outcome is None:
            await self._record(reader.usage, cost)
        if out:
            yield out

    async def drain(self, relay: AsyncIterator[bytes]) -> None:
        """The harness stopped reading: read the rest of the answer (bounded) to record its usage."""
        if self.outcome is not None:
            return
        with anyio.move_on_after(DRAIN_TIMEOUT):
            try:
                async for _ in relay:
                    pass
            except httpx.HTTPError:
                pass

    def close(self) -> None:
        """The exchange is over: a call that never reached its usage was cut."""
        if self.outcome is None:
            log.warning("usage.cut", call_id=self._id, model=self._model)
            self._end("cut")

    def _end(self, outcome: str, tokens: Tokens | None = None) -> None:
        self.outcome, self.tokens = outcome, tokens
        self._meter.counters.count(self._scope.team_id, outcome, tokens)

    async def _record(self, tokens: Tokens | None, header_cost: float | None = None) -> None:
        found = tokens is not None
        if not found:
            log.warning("usage.missing", call_id=self._id, model=self._model, api=self.api)
        tokens = tokens or Tokens()
        if header_cost is not None:
            tokens = msgspec.structs.replace(tokens, cost=header_cost)
        record = UsageRecord(
            id=self._id,
            at=utcnow(),
            team_id=self._scope.team_id,
            agent_id=self._scope.agent_id,
            session_id=self._session_id,
            model=self._model,
            input_tokens=tokens.input,
            output_tokens=tokens.output,
            cached_tokens=tokens.cached,
            cost_usd=tokens.cost,
        )
        stored = await self._meter.record(record)
        if not stored:
            log.error("usage.unrecorded", **msgspec.structs.asdict(record))
        self._end(("recorded" if found else "no_usage") if stored else "unrecorded", tokens)


async def pass_on(response: httpx.Response, call: MeteredCall | None, send: Callable[[bytes], Awaitable[None]]) -> None:
    """Send the body of the gateway's answer on with `send`, metered by `call` when there is one."""
    if call is None:
        async for chunk in response.aiter_raw():
            await send(chunk)
        return
    relay = call.relay(response.status_code, response.headers, response.aiter_raw())
    try:
        async for chunk in relay:
            try:
                await send(chunk)
            except Exception:
                await call.drain(relay)  # the harness left: its answer is still read for its usage
                raise
    finally:
        call.close()
