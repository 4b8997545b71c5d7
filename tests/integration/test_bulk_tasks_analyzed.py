"""Configs added in bulk by SQL (a migration from another scheduler): the node's reconcile that
inserts their tasks analyses the claim's tables at once, so the first claims are planned with
statistics, not as a nested loop over every due task per config until autovacuum's first
analyse. A reconcile that inserts a few tasks leaves the statistics to autovacuum."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from runtime import store
from runtime.node.gateway import ANALYZE_AFTER_TASKS, PgGateway, Registration
from sandbox import load_plugin

TINY = Path(__file__).resolve().parents[1] / "plugins" / "tiny"


def _analysed(db: psycopg.Connection[Any]) -> bool:
    """Whether ANALYZE has run on the tasks table (its columns have statistics)."""
    row = db.execute(
        "SELECT count(*) AS n FROM pg_stats"
        " WHERE schemaname = 'plugin_runtime' AND tablename = 'tasks'"
    ).fetchone()
    assert row is not None
    return int(row["n"]) > 0


def _reconcile_after_adding(database_url: str, db: psycopg.Connection[Any], configs: int) -> int:
    plugin_id = store.install_plugin(db, load_plugin(TINY))
    db.execute(
        "INSERT INTO plugin_runtime.plugin_configs (plugin_id, settings)"
        ' SELECT %(p)s, \'{"api_key": "k"}\'::jsonb FROM generate_series(1, %(n)s)',
        {"p": plugin_id, "n": configs},
    )
    gateway = PgGateway(database_url)
    try:
        gateway.open(Registration("node-a", "h", 2, ("scheduledTasks",), {}, 1))
        before = gateway.statements
        gateway.reconcile_tasks()
        return gateway.statements - before
    finally:
        gateway.close()


def test_a_bulk_of_new_tasks_is_analysed_by_the_reconcile_that_inserts_it(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    assert not _analysed(db)
    statements = _reconcile_after_adding(database_url, db, ANALYZE_AFTER_TASKS)
    assert _analysed(db) and statements == 3  # zones, insert, analyse


def test_a_few_new_tasks_are_left_to_autovacuum(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    statements = _reconcile_after_adding(database_url, db, 5)
    assert not _analysed(db) and statements == 2
