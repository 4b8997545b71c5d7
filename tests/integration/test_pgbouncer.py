"""What transaction pooling breaks, checked through a real PgBouncer in transaction mode: every
connection the runtime makes works through it (no server-side prepared statements, no session
lock or setting left behind), migrating from many processes at once applies each migration once,
and a listener that cannot hear through it says so and falls back (or listens on a direct URL).
The fleet tests that run every node through it are in test_scheduler.py and test_chaos.py."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from runtime.db import connect
from runtime.migrate import available_migrations, migrate
from runtime.node.listener import Listener
from runtime.testing.pgbouncer import PgBouncer


def test_the_pooler_runs_in_transaction_mode_and_shares_server_connections(
    pgbouncer: PgBouncer, database_url: str
) -> None:
    pools = pgbouncer.admin("SHOW POOLS")
    assert any(row[-1] == "transaction" for row in pools)
    # Two clients, one after the other, on one server connection: what one session SETs
    # (outside a transaction) is seen by the other client. This is the hazard the runtime avoids.
    url = pgbouncer.url_for(database_url)
    with psycopg.connect(url, autocommit=True) as a, psycopg.connect(url, autocommit=True) as b:
        a.execute("SET application_name = 'leaked-by-a'")
        seen = {_one(b.execute("SHOW application_name").fetchone()) for _ in range(20)}
    assert "leaked-by-a" in seen, "session state leaks across clients in transaction mode"


def _one(row: Any) -> Any:
    assert row is not None
    return row[0]


def test_runtime_connections_need_no_session(pgbouncer: PgBouncer, database_url: str) -> None:
    """Many clients through a small pool, each statement repeated past psycopg's prepare
    threshold: with server-side prepared statements this fails ('prepared statement ... does
    not exist / already exists'); `runtime.db.connect` turns them off."""
    url = pgbouncer.url_for(database_url)
    errors: list[BaseException] = []

    def work(_: int) -> None:
        try:
            with connect(url) as conn:
                for i in range(30):
                    row = conn.execute(
                        "SELECT count(*) AS n FROM plugin_runtime.plugins WHERE id > %s", (i,)
                    ).fetchone()
                    assert row is not None and row["n"] == 0
        except BaseException as exc:
            errors.append(exc)

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(work, range(12)))
    assert errors == []


def test_psycopg_defaults_do_break_through_the_pooler(
    pgbouncer: PgBouncer, database_url: str
) -> None:
    """The counterpart that shows the test above can fail: psycopg's default prepared statements
    (here prepared at once) break when clients share server connections."""
    url = pgbouncer.url_for(database_url)
    errors: list[BaseException] = []
    barrier = threading.Barrier(12)

    def work(_: int) -> None:
        try:
            with psycopg.connect(url, autocommit=True, prepare_threshold=0) as conn:
                barrier.wait(10)
                for i in range(30):
                    conn.execute("SELECT %s::int + 1", (i,)).fetchone()
        except psycopg.Error as exc:
            errors.append(exc)

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(work, range(12)))
    assert errors, "prepared statements survived transaction pooling"
    assert any("prepared statement" in str(e) for e in errors)


def test_many_processes_migrating_through_the_pooler_apply_each_migration_once(
    pgbouncer: PgBouncer, empty_database_url: str
) -> None:
    url = pgbouncer.url_for(empty_database_url)
    barrier = threading.Barrier(6)

    def run(_: int) -> list[str]:
        with connect(url) as conn:
            barrier.wait(10)
            return migrate(conn)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(run, range(6)))
    applied = [label for result in results for label in result]
    assert sorted(applied) == sorted(m.label for m in available_migrations())
    with connect(url) as conn:
        rows = conn.execute("SELECT version FROM plugin_runtime.schema_migrations").fetchall()
        assert len(rows) == len(available_migrations())
        # Nothing a migration SET or locked outlived its transaction on the pooled connection.
        for _ in range(10):
            row = conn.execute(
                "SELECT current_setting('search_path') AS sp, "
                "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory') AS locks"
            ).fetchone()
            assert row is not None
            assert "plugin_runtime" not in row["sp"].split(",")[0]
            assert row["locks"] == 0


@pytest.mark.parametrize("route", ["direct", "via_pgbouncer"])
def test_a_listener_hears_directly_and_knows_when_it_cannot(
    route: str, pgbouncer: PgBouncer, database_url: str
) -> None:
    url = database_url if route == "direct" else pgbouncer.url_for(database_url)
    wake = threading.Event()
    listener = Listener(url, wake)
    listener.start()
    try:
        if route == "direct":
            assert listener.connected.wait(10), "the direct listener connects and hears its probe"
            listener.drain()
            with connect(database_url) as conn:
                conn.execute("SELECT pg_notify('plugin_runtime_trigger', '42')")
            heard: list[str] = []
            deadline = time.monotonic() + 5
            while "plugin_runtime_trigger" not in heard and time.monotonic() < deadline:
                heard += [c.channel for c in listener.drain() if c.channel != "reconnected"]
                time.sleep(0.05)
            assert heard == ["plugin_runtime_trigger"]
            assert not listener.deaf.is_set()
        else:
            assert listener.deaf.wait(10), "the pooled listener finds out it hears nothing"
            assert not listener.connected.is_set()
    finally:
        listener.stop()
