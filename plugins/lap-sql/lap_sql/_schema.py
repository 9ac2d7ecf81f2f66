"""The tables (as piccolo `Table` classes bound per store) and the migrations that create them.

The classes below are templates with no engine: `Tables(engine)` subclasses each one bound to
that engine, so stores on different databases never share piccolo state. They describe the
latest schema for queries only; the schema itself comes from `MIGRATIONS`, plain SQL that never
changes once released (add a migration instead).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, cast

from piccolo.columns import BigInt, Boolean, Bytea, DoublePrecision, Integer, Text, Timestamptz
from piccolo.table import Table, create_table_class

if TYPE_CHECKING:
    from piccolo.engine.base import Engine

    from lap_sql._db import Dialect


class TeamRow(Table, tablename="teams"):
    """A row of `teams`; the budget columns are null for no limit, `egress` for no default policy."""

    id = Text(primary_key=True)
    name = Text()
    created_at = Timestamptz()
    budget_tokens_per_month = BigInt(null=True, default=None)
    budget_usd_per_month = DoublePrecision(null=True, default=None)
    egress = Text(null=True, default=None)


class AgentRow(Table, tablename="agents"):
    """A row of `agents` (unique `team_id` + `name`); `options` is JSON text."""

    id = Text(primary_key=True)
    team_id = Text()
    name = Text()
    harness = Text()
    model = Text()
    prompt = Text()
    options = Text()
    on_busy = Text()
    egress = Text(null=True, default=None)
    repo_url = Text(null=True, default=None)
    branch = Text(null=True, default=None)
    created_at = Timestamptz()
    updated_at = Timestamptz()


class SessionRow(Table, tablename="sessions"):
    """A row of `sessions`; `last_seq` is the counter that hands out event seqs."""

    id = Text(primary_key=True)
    team_id = Text()
    agent_id = Text()
    title = Text()
    status = Text()
    status_detail = Text()
    sandbox_name = Text(null=True, default=None)
    native_session_id = Text(null=True, default=None)
    sandbox_generation = BigInt()
    last_seq = Integer()
    created_at = Timestamptz()
    updated_at = Timestamptz()


class TurnRow(Table, tablename="turns"):
    """A row of `turns`."""

    id = Text(primary_key=True)
    session_id = Text()
    status = Text()
    user_seq = Integer()
    abort_requested = Boolean()
    client_key = Text(null=True, default=None)
    created_at = Timestamptz()
    finished_at = Timestamptz(null=True, default=None)


class EventRow(Table, tablename="events"):
    """A row of `events`; `data` is the event encoded by `lap_core.encode_event`.

    The real primary key is (`session_id`, `seq`); piccolo models single-column keys only, and
    uses this one just for the `RETURNING` clause of its inserts.
    """

    session_id = Text(primary_key=True)
    seq = Integer()
    turn_id = Text(null=True, default=None)
    type = Text()
    at = Timestamptz()
    data = Text()


class JobRow(Table, tablename="jobs"):
    """A row of `jobs`; `payload` is JSON text. `position` (set by the database) is the queue's order."""

    id = Text(primary_key=True)
    position = BigInt()
    kind = Text()
    session_id = Text(null=True, default=None)
    payload = Text()
    status = Text()
    attempts = Integer()
    leased_by = Text(null=True, default=None)
    lease_expires_at = Timestamptz(null=True, default=None)
    error = Text()
    created_at = Timestamptz()
    updated_at = Timestamptz()


class ApiKeyRow(Table, tablename="api_keys"):
    """A row of `api_keys`: a key's prefix and the hash of its secret."""

    id = Text(primary_key=True)
    team_id = Text()
    name = Text()
    prefix = Text()
    secret_hash = Text()
    created_at = Timestamptz()


class SecretRow(Table, tablename="secrets"):
    """A row of `secrets`: a secret's ciphertext (never its value); `hosts` is a JSON array."""

    id = Text(primary_key=True)
    team_id = Text()
    agent_id = Text(null=True, default=None)
    name = Text()
    hosts = Text()
    ciphertext = Bytea()
    created_at = Timestamptz()
    updated_at = Timestamptz()


class UsageRow(Table, tablename="usage_records"):
    """A row of `usage_records`: one model call (no foreign keys: usage outlives its session)."""

    id = Text(primary_key=True)
    at = Timestamptz()
    team_id = Text()
    agent_id = Text()
    session_id = Text()
    model = Text()
    input_tokens = BigInt()
    output_tokens = BigInt()
    cached_tokens = BigInt()
    cost_usd = DoublePrecision(null=True, default=None)


class MigrationRow(Table, tablename="lap_migrations"):
    """A row of `lap_migrations`: one per migration applied."""

    name = Text(primary_key=True)
    applied_at = Timestamptz()


_T = TypeVar("_T", bound=Table)


def _bind(template: type[_T], engine: Engine[Any]) -> type[_T]:
    table = create_table_class(
        template.__name__,
        bases=(template,),
        class_kwargs={"tablename": template._meta.tablename, "db": engine},
    )
    return cast("type[_T]", table)


class Tables:
    """The table classes of one store, bound to its engine."""

    def __init__(self, engine: Engine[Any]) -> None:
        self.teams = _bind(TeamRow, engine)
        self.agents = _bind(AgentRow, engine)
        self.sessions = _bind(SessionRow, engine)
        self.turns = _bind(TurnRow, engine)
        self.events = _bind(EventRow, engine)
        self.jobs = _bind(JobRow, engine)
        self.api_keys = _bind(ApiKeyRow, engine)
        self.secrets = _bind(SecretRow, engine)
        self.usage = _bind(UsageRow, engine)
        self.migrations = _bind(MigrationRow, engine)


_API_KEYS = [
    """CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL REFERENCES teams (id),
        name TEXT NOT NULL,
        prefix TEXT NOT NULL UNIQUE,
        secret_hash TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    )""",
    "CREATE INDEX api_keys_team ON api_keys (team_id, created_at)",
]

# Busy-session policies: the agent's default, and the abort flag any process can set on a turn.
_BUSY_POLICY = [
    "ALTER TABLE agents ADD COLUMN on_busy TEXT NOT NULL DEFAULT 'enqueue'",
    "ALTER TABLE turns ADD COLUMN abort_requested BOOLEAN NOT NULL DEFAULT FALSE",
    # `start_turn(if_idle=True)` and `request_abort` look for a session's unfinished turns.
    "CREATE INDEX turns_session_open ON turns (session_id, user_seq) WHERE status IN ('queued', 'running')",
]

# Idempotent sends: a client's key for a message, unique within the session.
_CLIENT_KEYS = [
    "ALTER TABLE turns ADD COLUMN client_key TEXT",
    "CREATE UNIQUE INDEX turns_session_client_key ON turns (session_id, client_key) WHERE client_key IS NOT NULL",
]

# Stub keys name their sandbox's generation: a replaced sandbox's key is revoked.
_SANDBOX_GENERATION = ["ALTER TABLE sessions ADD COLUMN sandbox_generation BIGINT NOT NULL DEFAULT 0"]

# Where an agent's sandboxes may go (a JSON EgressPolicy), and the repository cloned into its sessions.
_EGRESS = [
    "ALTER TABLE agents ADD COLUMN egress TEXT",
    "ALTER TABLE agents ADD COLUMN repo_url TEXT",
    "ALTER TABLE agents ADD COLUMN branch TEXT",
]
# Secrets, encrypted by the engine: a name is unique per team (team-wide) or per agent; an agent's
# secrets go with it.
_SECRET_COLUMNS = """
        id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL REFERENCES teams (id),
        agent_id TEXT REFERENCES agents (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        hosts TEXT NOT NULL,
        ciphertext {blob} NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
"""
_SECRETS = {
    dialect: [
        f"CREATE TABLE secrets ({_SECRET_COLUMNS.format(blob=blob)})",
        "CREATE UNIQUE INDEX secrets_scope_name ON secrets (team_id, COALESCE(agent_id, ''), name)",
        "CREATE INDEX secrets_agent ON secrets (agent_id)",
    ]
    for dialect, blob in (("postgres", "BYTEA"), ("sqlite", "BLOB"))
}
# Usage of the LLM proxy's model calls, and each team's monthly budget.
_USAGE = [
    """CREATE TABLE usage_records (
        id TEXT PRIMARY KEY,
        at TIMESTAMPTZ NOT NULL,
        team_id TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        model TEXT NOT NULL,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        cached_tokens BIGINT NOT NULL,
        cost_usd DOUBLE PRECISION
    )""",
    # The budget check sums a team's month; the API filters by team, agent or session and time.
    "CREATE INDEX usage_records_team_at ON usage_records (team_id, at)",
    "CREATE INDEX usage_records_agent_at ON usage_records (agent_id, at)",
    "CREATE INDEX usage_records_session_at ON usage_records (session_id, at)",
    "CREATE INDEX usage_records_at ON usage_records (at)",
    "ALTER TABLE teams ADD COLUMN budget_tokens_per_month BIGINT",
    "ALTER TABLE teams ADD COLUMN budget_usd_per_month DOUBLE PRECISION",
]

# A team's default egress policy (a JSON EgressPolicy), for its agents that have none.
_TEAM_EGRESS = ["ALTER TABLE teams ADD COLUMN egress TEXT"]

# Integrations: a delivery cursor per integration and session (the last seq it acknowledged), the lease
# that lets one worker at a time deliver an integration's events, and links from an integration's own
# records to sessions. Cursors and links go with their session.
_INTEGRATIONS = [
    """CREATE TABLE integration_leases (
        integration TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE integration_cursors (
        integration TEXT NOT NULL,
        session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        seq BIGINT NOT NULL,
        PRIMARY KEY (integration, session_id)
    )""",
    "CREATE INDEX integration_cursors_session ON integration_cursors (session_id)",
    """CREATE TABLE integration_links (
        integration TEXT NOT NULL,
        external_id TEXT NOT NULL,
        session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        created_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (integration, external_id)
    )""",
    "CREATE INDEX integration_links_session ON integration_links (session_id, integration)",
]

MIGRATIONS_TABLE = "CREATE TABLE IF NOT EXISTS lap_migrations (name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"

# Each migration is a list of statements run in one transaction. SQLite takes the column types
# literally: TIMESTAMPTZ makes piccolo's converter return aware datetimes.
_INITIAL = [
    """CREATE TABLE teams (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE agents (
        id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        name TEXT NOT NULL,
        harness TEXT NOT NULL,
        model TEXT NOT NULL,
        prompt TEXT NOT NULL DEFAULT '',
        options TEXT NOT NULL DEFAULT '{}',
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    "CREATE UNIQUE INDEX agents_team_name ON agents (team_id, name)",
    """CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        agent_id TEXT NOT NULL REFERENCES agents (id),
        title TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'new',
        status_detail TEXT NOT NULL DEFAULT '',
        sandbox_name TEXT,
        native_session_id TEXT,
        last_seq BIGINT NOT NULL DEFAULT 0,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    "CREATE INDEX sessions_team_created ON sessions (team_id, created_at)",
    "CREATE INDEX sessions_agent_created ON sessions (agent_id, created_at)",
    """CREATE TABLE turns (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        status TEXT NOT NULL,
        user_seq BIGINT NOT NULL DEFAULT 0,
        created_at TIMESTAMPTZ NOT NULL,
        finished_at TIMESTAMPTZ
    )""",
    "CREATE INDEX turns_session_seq ON turns (session_id, user_seq)",
    # The primary key is the index of reads by (session_id, seq).
    """CREATE TABLE events (
        session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        seq BIGINT NOT NULL,
        turn_id TEXT,
        type TEXT NOT NULL,
        at TIMESTAMPTZ NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (session_id, seq)
    )""",
]


_JOB_COLUMNS = """
        kind TEXT NOT NULL,
        session_id TEXT REFERENCES sessions (id) ON DELETE CASCADE,
        payload TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        leased_by TEXT,
        lease_expires_at TIMESTAMPTZ,
        error TEXT NOT NULL DEFAULT '',
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
"""
# The queue's order is `position`, a counter the database hands out on insert: unlike timestamps it
# never ties, and as a job is inserted after its session's row is locked (`start_turn` bumps
# `last_seq` first), a session's jobs get increasing positions in commit order.
_JOBS = {
    "postgres": f"CREATE TABLE jobs (id TEXT PRIMARY KEY, position BIGINT GENERATED ALWAYS AS IDENTITY,{_JOB_COLUMNS})",
    "sqlite": f"CREATE TABLE jobs (position INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,{_JOB_COLUMNS})",
}


def _jobs(dialect: Dialect) -> list[str]:
    return [
        _JOBS[dialect],
        # `lease_job` scans the open jobs in order; done and failed ones pile up outside this index.
        "CREATE INDEX jobs_open_position ON jobs (position) WHERE status IN ('queued', 'leased')",
        # `lease_job` looks for older or leased jobs of the candidate's session; `list_jobs` by session.
        "CREATE INDEX jobs_session_position ON jobs (session_id, position)",
    ]


def migrations(dialect: Dialect) -> list[tuple[str, list[str]]]:
    """Return every migration for `dialect`, oldest first, as (name, statements)."""
    # The first migration is the same SQL on SQLite and PostgreSQL.
    return [
        ("0001_initial", _INITIAL),
        ("0002_jobs", _jobs(dialect)),
        ("0003_api_keys", _API_KEYS),
        ("0004_busy_policy", _BUSY_POLICY),
        ("0005_client_keys", _CLIENT_KEYS),
        ("0006_sandbox_generation", _SANDBOX_GENERATION),
        ("0007_secrets", _SECRETS[dialect]),
        ("0008_usage", _USAGE),
        ("0009_egress", _EGRESS),
        ("0010_team_egress", _TEAM_EGRESS),
        ("0011_integrations", _INTEGRATIONS),
    ]
