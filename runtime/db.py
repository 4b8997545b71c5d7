"""Where the database is, how to connect to it, and why a connection failed.

The URL comes from the caller (`--database-url`), else `PLUGIN_RUNTIME_DATABASE_URL`, else an
embedded PostgreSQL server (the `pgserver` wheel) with its data in `$PLUGIN_RUNTIME_DATA_DIR`,
by default the user's data directory (`$XDG_DATA_HOME/plugin-runtime/pgdata`, else
`~/.local/share/plugin-runtime/pgdata`): one server per user whatever the working directory, so
a command run from another directory finds the same plugins and does not start a second server.
It is started on first use and left running (`plugin-runtime db stop` stops it); every process
that uses it says so once on stderr (path, started or reused).

Connection failures become `DatabaseUnavailable` with a one-line message that names where we
tried to connect and why it failed, and never contains the password. Its `failure` tells the
causes apart (unreachable, authentication refused, missing database, too many connections), each
with its own next step (`next_step`).
"""

from __future__ import annotations

import enum
import os
import re
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row

ENV_DATABASE_URL = "PLUGIN_RUNTIME_DATABASE_URL"
ENV_DATA_DIR = "PLUGIN_RUNTIME_DATA_DIR"
DEFAULT_CONNECT_TIMEOUT_S = 5
APPLICATION_NAME = "plugin-runtime"


class DbFailure(enum.Enum):
    """Why the database cannot be used; each has its own next step."""

    UNREACHABLE = "unreachable"  # nothing answers at host:port (down, wrong address, firewall)
    AUTHENTICATION = "authentication"  # the server refused the user or password (or pg_hba.conf)
    NO_DATABASE = "no_database"  # the server is up but the database does not exist
    TOO_MANY_CONNECTIONS = "too_many_connections"  # max_connections reached
    NO_SCHEMA = "no_schema"  # connected, but `db migrate` never ran on this database
    EMBEDDED = "embedded"  # the embedded server cannot start


class DatabaseError(Exception):
    """A statement failed for a reason that is not an outage (see the subclasses)."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be used: `failure` says why, `next_step` what to do."""

    def __init__(
        self, message: str, failure: DbFailure = DbFailure.UNREACHABLE, next_step: str = ""
    ) -> None:
        super().__init__(message)
        self.failure = failure
        self.next_step = next_step


class Refused(DatabaseError):
    """PostgreSQL (or the encoder before it) refused the data of a statement: the same data will
    be refused again, so it is not retried as it is."""


class Conflict(DatabaseError):
    """A unique constraint held: someone else wrote the same row at the same moment."""


class InvalidDatabaseUrl(ValueError):
    """The database URL itself is malformed: bad input, not an outage."""


def default_data_dir() -> Path:
    """The embedded server's data directory when $PLUGIN_RUNTIME_DATA_DIR is not set: one per
    user, whatever the working directory."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "plugin-runtime" / "pgdata"


def data_dir() -> Path:
    """The embedded server's data directory: $PLUGIN_RUNTIME_DATA_DIR, else `default_data_dir()`."""
    from_env = os.environ.get(ENV_DATA_DIR)
    return Path(from_env).expanduser().resolve() if from_env else default_data_dir()


def resolve_database_url(explicit: str | None) -> str:
    """The URL to use: `explicit`, else the environment, else the embedded server's."""
    if explicit:
        return explicit
    from_env = os.environ.get(ENV_DATABASE_URL)
    if from_env:
        return from_env
    return embedded_database_url(data_dir(), announce=True)


_announced: set[Path] = set()


def embedded_pid(directory: Path) -> int | None:
    """The pid of the embedded server running on `directory`, or None."""
    try:
        pid = int((directory / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by someone else
    return pid


def embedded_database_url(data_dir: Path, *, announce: bool = False) -> str:
    """Start (or reuse) the embedded PostgreSQL server whose data lives in `data_dir`. With
    `announce`, say once per process on stderr where it is and whether it was started."""
    data_dir = data_dir.expanduser().resolve()
    running = embedded_pid(data_dir)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
            import pgserver
    except ImportError:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        raise DatabaseUnavailable(
            f"no database URL, and the embedded PostgreSQL needs the pgserver package, which is "
            f"not installed (it has no build for Python {version})",
            DbFailure.EMBEDDED,
            f"give --database-url or set {ENV_DATABASE_URL}",
        ) from None
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pgserver.get_server(data_dir, cleanup_mode=None)
            url: str = server.get_uri()
    except Exception as exc:  # pgserver raises many kinds; all mean "no embedded server"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnavailable(
            f"cannot start the embedded PostgreSQL in {data_dir}: {reason}",
            DbFailure.EMBEDDED,
            f"set {ENV_DATA_DIR} to a writable directory, or give --database-url",
        ) from exc
    if announce and data_dir not in _announced:
        _announced.add(data_dir)
        how = f"reused (pid {running})" if running else "started; it stays running"
        print(
            f"embedded PostgreSQL in {data_dir}: {how} (plugin-runtime db stop stops it)",
            file=sys.stderr,
        )
    return url


def stop_embedded(directory: Path, timeout_s: float = 30.0) -> int | None:
    """Stop the embedded server running on `directory` (PostgreSQL's fast shutdown: SIGINT) and
    wait until it is gone; returns its pid, or None when none was running."""
    pid = embedded_pid(directory)
    if pid is None:
        return None
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if embedded_pid(directory) is None:
            return pid
        time.sleep(0.1)
    raise DatabaseUnavailable(
        f"the embedded PostgreSQL (pid {pid}) did not stop within {timeout_s:.0f} s",
        DbFailure.EMBEDDED,
        f"kill -TERM {pid}",
    )


def describe_location(url: str) -> str:
    """`host:port` (or the socket directory) of a database URL, without user or password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "<invalid database URL>"
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or "5432")
    if host.startswith("/"):
        return f"{host}/.s.PGSQL.{port}"
    return f"{host}:{port}"


def _password(url: str) -> str | None:
    try:
        value = conninfo_to_dict(url).get("password")
    except psycopg.Error:
        match = re.match(r"^[a-z]+://[^:/@]*:([^@]*)@", url)
        value = match.group(1) if match else None
    return str(value) if value else None


def redact(text: str, url: str) -> str:
    """`text` with the URL's password (if any) replaced by `***`."""
    password = _password(url)
    if password:
        text = text.replace(password, "***")
    return text


def failure_reason(exc: BaseException) -> str:
    """The useful part of a libpq connection error, on one line, e.g. 'connection refused'."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    first = lines[0]
    if " failed: " in first:
        first = first.rsplit(" failed: ", 1)[1]
    first = re.sub(r"^(FATAL|ERROR):\s*", "", first).strip()
    if first[:1].isupper() and first[1:2].islower():
        first = first[0].lower() + first[1:]
    return first


def diagnose(url: str, reason: str) -> tuple[DbFailure, str, str]:
    """(failure, message, next step) for a connection that failed with libpq's `reason`."""
    where = describe_location(url)
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        params = {}
    host = str(params.get("host") or params.get("hostaddr") or "")
    port = str(params.get("port") or "")
    user = str(params.get("user") or os.environ.get("PGUSER") or "the current user")
    dbname = str(params.get("dbname") or user)
    low = reason.lower()
    if (
        "too many clients" in low
        or "connection slots are reserved" in low
        or "too many connections for" in low  # a role's or a database's CONNECTION LIMIT
    ):
        return (
            DbFailure.TOO_MANY_CONNECTIONS,
            f"PostgreSQL at {where} refuses new connections: {reason}",
            'see who holds them (as a superuser): psql -c "SELECT usename, application_name, '
            'count(*) FROM pg_stat_activity GROUP BY 1, 2 ORDER BY 3 DESC"; then raise '
            "max_connections or stop what leaks connections (each serve node holds two)",
        )
    if (
        "password authentication failed" in low
        or "no pg_hba.conf entry" in low
        or ("role" in low and "does not exist" in low)
        or "no password supplied" in low
        or "authentication failed" in low
    ):
        return (
            DbFailure.AUTHENTICATION,
            f"PostgreSQL at {where} refused to let {user} in: {reason}",
            "check the user and password in --database-url / $"
            f"{ENV_DATABASE_URL}, and that pg_hba.conf allows this host for that user",
        )
    if "database" in low and "does not exist" in low:
        return (
            DbFailure.NO_DATABASE,
            f"PostgreSQL at {where} is up but has no database {dbname!r}",
            f"createdb -h {host or 'localhost'} -p {port or '5432'} -U {user} {dbname}; "
            "then: plugin-runtime db migrate",
        )
    return (
        DbFailure.UNREACHABLE,
        f"cannot reach PostgreSQL at {where}: {reason}",
        f"pg_isready -h {host or 'localhost'} -p {port or '5432'}",
    )


def connect(
    url: str, *, connect_timeout: float | None = None, application_name: str | None = None
) -> psycopg.Connection[DictRow]:
    """An autocommit connection returning rows as dicts, that needs no session: it works the
    same through PgBouncer in transaction pooling mode (see docs/deploy.md).

    Raises `DatabaseUnavailable` (one line, no password, with its `failure` and `next_step`)
    when the server cannot be used, and `InvalidDatabaseUrl` when the URL cannot be parsed.
    """
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise InvalidDatabaseUrl(
            f"invalid database URL: {redact(failure_reason(exc), url)}"
        ) from exc
    extra: dict[str, Any] = {}
    if "connect_timeout" not in params:
        extra["connect_timeout"] = int(connect_timeout or DEFAULT_CONNECT_TIMEOUT_S)
    if "application_name" not in params:
        extra["application_name"] = application_name or APPLICATION_NAME
    try:
        # prepare_threshold=None: no server-side prepared statements. Behind a pooler in
        # transaction mode the next statement may run on another server connection, where the
        # prepared statement does not exist; every query here is cheap to plan.
        return psycopg.connect(
            url, autocommit=True, row_factory=dict_row, prepare_threshold=None, **extra
        )
    except psycopg.OperationalError as exc:
        failure, message, next_step = diagnose(url, redact(failure_reason(exc), url))
        raise DatabaseUnavailable(message, failure, redact(next_step, url)) from exc
