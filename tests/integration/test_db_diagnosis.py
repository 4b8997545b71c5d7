"""Why the database cannot be used, told apart: unreachable, refused authentication, missing
database, missing schema, too many connections; each with its own next step, in every command,
`status` and `doctor`. Against the real PostgreSQL (throwaway roles and databases)."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from runtime.db import DatabaseUnavailable, DbFailure, connect, diagnose

if TYPE_CHECKING:
    from conftest import CliRunner


def _with(url: str, **changes: str) -> str:
    params = conninfo_to_dict(url)
    params.update(changes)
    return make_conninfo("", **params)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def limited_role(postgres_server_url: str) -> Iterator[str]:
    """A login role allowed no connection at all (CONNECTION LIMIT 0), dropped afterwards."""
    name = f"prt_limited_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN CONNECTION LIMIT 0")
    try:
        yield name
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {name}")


def _failure(url: str) -> DatabaseUnavailable:
    with pytest.raises(DatabaseUnavailable) as caught:
        connect(url, connect_timeout=3)
    return caught.value


def test_causes_are_told_apart(database_url: str, limited_role: str) -> None:
    down = _failure(_with(database_url, port=str(_closed_port())))
    assert down.failure is DbFailure.UNREACHABLE and down.next_step.startswith("pg_isready -h")

    nobody = _failure(_with(database_url, user=f"nobody_{uuid.uuid4().hex[:6]}"))
    assert nobody.failure is DbFailure.AUTHENTICATION, nobody
    assert "user and password" in nobody.next_step and "pg_hba.conf" in nobody.next_step

    missing = _failure(_with(database_url, dbname="prt_no_such_db"))
    assert missing.failure is DbFailure.NO_DATABASE
    assert "has no database 'prt_no_such_db'" in str(missing)
    assert missing.next_step.startswith("createdb ") and "prt_no_such_db" in missing.next_step

    full = _failure(_with(database_url, user=limited_role))
    assert full.failure is DbFailure.TOO_MANY_CONNECTIONS, full
    assert "pg_stat_activity" in full.next_step and "max_connections" in full.next_step


def test_server_wide_connection_exhaustion_is_recognised() -> None:
    """max_connections itself cannot be exhausted on a shared test server; its message is
    PostgreSQL's fixed text."""
    failure, message, step = diagnose(
        "postgresql://app@db1:5432/app", "sorry, too many clients already"
    )
    assert failure is DbFailure.TOO_MANY_CONNECTIONS and "db1:5432" in message
    assert "max_connections" in step


def test_every_surface_gives_the_right_next_step(
    cli_runner: CliRunner, database_url: str, empty_database_url: str, limited_role: str
) -> None:
    cases = [
        (_with(database_url, user="nobody_x"), "DATABASE REFUSED AUTHENTICATION", "pg_hba.conf"),
        (_with(database_url, dbname="prt_no_such_db"), "DATABASE DOES NOT EXIST", "createdb "),
        (_with(database_url, user=limited_role), "DATABASE HAS NO FREE CONNECTION", "pg_stat"),
        (empty_database_url, "SCHEMA MISSING", "plugin-runtime db migrate"),
    ]
    for url, headline, step in cases:
        cli = replace(cli_runner, database_url=url)
        status = cli("status")
        assert headline in status.stdout, status.stdout
        assert step in status.stdout and "pg_isready" not in status.stdout, status.stdout
        as_json = json.loads(cli("status", "--json").stdout)
        assert as_json["problems"][0]["check"] == "database"
        assert step in as_json["problems"][0]["command"]
        doctor = cli("doctor")
        assert doctor.returncode in (1, 3) and "1. database reachable and fast: CRITICAL" in (
            doctor.stdout
        )
        assert step in doctor.stdout
        if headline != "SCHEMA MISSING":  # other commands migrate a reachable empty database
            runs = cli("runs")
            assert runs.returncode == 3 and step in runs.stderr, runs.stderr
