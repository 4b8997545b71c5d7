"""The shapes crossing into SQL produce the SQL's column lists; the SQL speaks the vocabulary."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from runtime.node.gateway import _statement
from runtime.node.records import RECORDSETS, Claim, Completion, recordset_columns
from runtime.queries import all_queries
from sandbox.manifest import Cadence
from sandbox.outcome import FAILURES, Outcome

MIGRATIONS = Path(__file__).resolve().parents[2] / "runtime" / "sql" / "migrations"


def test_recordset_columns_come_from_the_dataclass_fields() -> None:
    assert recordset_columns(Claim).startswith("task_id bigint, run_slot timestamptz, ")
    for shape in RECORDSETS.values():
        columns = [c.split(" ", 1)[0] for c in recordset_columns(shape).split(", ")]
        assert columns == [f.name for f in fields(shape)]


def test_every_statement_has_its_markers_filled_in() -> None:
    for name in all_queries():
        text = _statement(name)
        assert "/*columns:" not in text and "/*outcomes:" not in text, name
        assert "/*cadences:" not in text, name
    sync = _statement("sync_tasks_update")
    assert "IN ('day', 'cron')" in sync and [c.value for c in Cadence if c.zoned] == ["day", "cron"]
    complete = _statement("complete_runs")
    assert f"AS r({recordset_columns(Completion)})" in complete
    assert "'timeout'" in complete and "'lost'" not in complete.split("FILTER")[1].split(")")[0]


def test_the_failures_are_the_sandbox_outcomes_but_ok() -> None:
    assert Outcome.OK not in FAILURES and Outcome.LOST not in FAILURES
    assert {Outcome.ERROR, Outcome.TIMEOUT, Outcome.CRASHED} <= FAILURES
    assert Outcome.TIMEOUT.killed and not Outcome.ERROR.killed and Outcome.ERROR.failed


def test_migration_checks_hold_runs_and_tasks_to_the_enums() -> None:
    text = (MIGRATIONS / "0004_outcome_and_state_checks.sql").read_text()
    check = re.search(r"CHECK \(outcome IN \(([^)]*)\)\)", text)
    assert check is not None
    assert set(re.findall(r"'(\w+)'", check.group(1))) == {o.value for o in Outcome}
    initial = (MIGRATIONS / "0001_initial.sql").read_text()
    cadences = re.search(r"CHECK \(cadence IN \(([^)]*)\)\)", initial)
    assert cadences is not None
    assert set(re.findall(r"'(\w+)'", cadences.group(1))) == {c.value for c in Cadence}
