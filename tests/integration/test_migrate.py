"""Schema migrations against a real PostgreSQL: order, idempotence, rollback, the advisory lock."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from runtime.db import connect
from runtime.migrate import (
    LOCK_KEY,
    MigrationError,
    available_migrations,
    migrate,
    pending_migrations,
)

EXPECTED_TABLES = {
    "plugins",
    "plugin_configs",
    "tasks",
    "runs",
    "storage",
    "logs",
    "nodes",
    "schema_migrations",
}


def _tables(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'plugin_runtime'"
    ).fetchall()
    return {row["table_name"] for row in rows}


def test_fresh_database_gets_the_whole_schema_once(empty_database_url: str) -> None:
    with connect(empty_database_url) as conn:
        assert pending_migrations(conn) == available_migrations()
        assert migrate(conn) == [m.label for m in available_migrations()]
        assert _tables(conn) >= EXPECTED_TABLES
        assert migrate(conn) == []  # idempotent
        assert pending_migrations(conn) == []
        versions = [
            r["version"]
            for r in conn.execute(
                "SELECT version FROM plugin_runtime.schema_migrations ORDER BY version"
            )
        ]
        assert versions == [m.version for m in available_migrations()]


def test_migrate_leaves_the_session_search_path_alone(empty_database_url: str) -> None:
    with connect(empty_database_url) as conn:
        before = conn.execute("SHOW search_path").fetchone()
        migrate(conn)  # 0001 says SET search_path = plugin_runtime
        assert conn.execute("SHOW search_path").fetchone() == before


def test_migrate_needs_an_autocommit_connection(empty_database_url: str) -> None:
    with psycopg.connect(empty_database_url) as conn, pytest.raises(ValueError, match="autocommit"):
        migrate(conn)


def test_failed_migration_is_rolled_back_and_named(tmp_path: Path, empty_database_url: str) -> None:
    (tmp_path / "0001_good.sql").write_text(
        "CREATE SCHEMA IF NOT EXISTS plugin_runtime;\nCREATE TABLE plugin_runtime.good (id int);\n"
    )
    (tmp_path / "0002_bad.sql").write_text(
        "CREATE TABLE plugin_runtime.half (id int);\nSELECT no_such_function();\n"
    )
    with connect(empty_database_url) as conn:
        with pytest.raises(MigrationError, match="0002_bad.sql"):
            migrate(conn, tmp_path)
        assert "good" in _tables(conn)
        assert "half" not in _tables(conn)  # the failed migration left nothing behind
        recorded = [
            r["version"]
            for r in conn.execute("SELECT version FROM plugin_runtime.schema_migrations")
        ]
        assert recorded == ["0001"]
        # The lock was released: another session can take it at once.
        with connect(empty_database_url) as other:
            got = other.execute("SELECT pg_try_advisory_lock(%s) AS got", [LOCK_KEY]).fetchone()
            assert got == {"got": True}


def test_misnamed_migration_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_initial.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="1_initial.sql"):
        available_migrations(tmp_path)


def _advisory_waiters(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
        " WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()"
    ).fetchone()
    assert row is not None
    return int(row["n"])


@pytest.mark.slow
def test_concurrent_migrate_from_several_processes(empty_database_url: str) -> None:
    """Processes that start together wait on the advisory lock; each migration applies once,
    by one of them."""
    holder = connect(empty_database_url)
    holder.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
    cmd = [sys.executable, "-m", "runtime", "db", "migrate", "--database-url", empty_database_url]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    try:
        deadline = time.monotonic() + 30
        while _advisory_waiters(holder) < len(procs):
            assert time.monotonic() < deadline, "the migrators never queued on the advisory lock"
            assert all(p.poll() is None for p in procs), "a migrator finished without the lock"
            time.sleep(0.05)
        holder.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
        results = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        holder.close()
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    outputs = [out for out, _err in results]
    # The lock is taken per migration, inside its transaction (so that it holds behind a pooler
    # in transaction mode): the processes may share the work, but each migration is applied by
    # exactly one of them.
    applied = [line for out in outputs for line in out.splitlines() if line.startswith("applied ")]
    assert sorted(applied) == [f"applied {m.label}" for m in available_migrations()], outputs
    with connect(empty_database_url) as conn:
        rows = conn.execute("SELECT version FROM plugin_runtime.schema_migrations").fetchall()
        assert [r["version"] for r in rows] == [m.version for m in available_migrations()]
