"""A Python client of the LAP server's REST API, sync (`Client`) and async (`AsyncClient`), on httpx.

    from lap_client import Client

    with Client("http://127.0.0.1:3000", api_key="...") as lap:
        agent = lap.agents.create("demo", harness="opencode", model="gpt-4o-mini")
        session = lap.sessions.create(agent.id)
        for record in lap.sessions.stream(session.id, "write hello.txt"):
            print(record.seq, record.event)

Answers are lap_core's models (`Agent`, `Session`, `EventRecord`, `Team`, `Secret`, `UsageTotals`) where the
server returns them, and this package's own records otherwise. Errors are typed: `ApiError` and its
families, and `ConnectionFailed`. docs/client.md is the guide.
"""

from lap_client._async import (
    AsyncAgents,
    AsyncClient,
    AsyncEventStream,
    AsyncKeys,
    AsyncSecrets,
    AsyncSessions,
    AsyncTeams,
)
from lap_client._errors import (
    ApiError,
    ClientError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
)
from lap_client._models import AgentPage, ApiKeyInfo, RestartAccepted, TurnAccepted, TurnResult, UsageReport
from lap_client._sync import Agents, Client, EventStream, Keys, Secrets, Sessions, Teams

__all__ = [
    "AgentPage",
    "Agents",
    "ApiError",
    "ApiKeyInfo",
    "AsyncAgents",
    "AsyncClient",
    "AsyncEventStream",
    "AsyncKeys",
    "AsyncSecrets",
    "AsyncSessions",
    "AsyncTeams",
    "Client",
    "ClientError",
    "Conflict",
    "ConnectionFailed",
    "EventStream",
    "Forbidden",
    "InvalidInput",
    "Keys",
    "NotFound",
    "RateLimited",
    "RestartAccepted",
    "Secrets",
    "ServerError",
    "Sessions",
    "Teams",
    "TurnAccepted",
    "TurnResult",
    "Unauthorized",
    "UsageReport",
]
