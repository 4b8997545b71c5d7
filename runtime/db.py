"""Where the database is, and how to connect to it.

The URL comes from the caller (`--database-url`), else `PLUGIN_RUNTIME_DATABASE_URL`, else an
embedded PostgreSQL server (the `pgserver` wheel) with its data in `./.pgdata`, started on first
use and left running so the next command finds it warm.

Connection failures become `DatabaseUnavailable` with a one-line message that names where we
tried to connect and why it failed, and never contains the password.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row

ENV_DATABASE_URL = "PLUGIN_RUNTIME_DATABASE_URL"
EMBEDDED_DATA_DIR = ".pgdata"
DEFAULT_CONNECT_TIMEOUT_S = 5
APPLICATION_NAME = "plugin-runtime"


class DatabaseUnavailable(Exception):
    """The database cannot be reached (or the embedded server cannot be started)."""


class InvalidDatabaseUrl(ValueError):
    """The database URL itself is malformed: bad input, not an outage."""


def resolve_database_url(explicit: str | None) -> str:
    """The URL to use: `explicit`, else the environment, else the embedded server's."""
    if explicit:
        return explicit
    from_env = os.environ.get(ENV_DATABASE_URL)
    if from_env:
        return from_env
    return embedded_database_url(Path.cwd() / EMBEDDED_DATA_DIR)


def embedded_database_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL server whose data lives in `data_dir`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
            import pgserver

            server = pgserver.get_server(data_dir, cleanup_mode=None)
            url: str = server.get_uri()
    except Exception as exc:  # pgserver raises many kinds; all mean "no embedded server"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnavailable(
            f"cannot start the embedded PostgreSQL in {data_dir}: {reason}"
        ) from exc
    return url


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


def connect(
    url: str, *, connect_timeout: float | None = None, application_name: str | None = None
) -> psycopg.Connection[DictRow]:
    """An autocommit connection returning rows as dicts.

    Raises `DatabaseUnavailable` (one line, no password) when the server cannot be reached, and
    `InvalidDatabaseUrl` when the URL cannot be parsed.
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
        return psycopg.connect(url, autocommit=True, row_factory=dict_row, **extra)
    except psycopg.OperationalError as exc:
        reason = redact(failure_reason(exc), url)
        raise DatabaseUnavailable(
            f"cannot reach PostgreSQL at {describe_location(url)}: {reason}"
        ) from exc
