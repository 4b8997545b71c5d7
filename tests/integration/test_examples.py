"""The example plugins run in the real sandbox (forked, jailed children) and do what their READMEs
say; the importer pages through a real local HTTP API over repeated runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from items_api import TOTAL_ITEMS, items_api

from runtime.store import validate_settings
from sandbox import Plugin, RunInfo, RunReport, RunRequest, Sandbox, load_plugin, resolve_limits
from sandbox.services import LocalServices

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def sandbox(start_sandbox: Callable[..., Sandbox]) -> Sandbox:
    """The importer's tests call a local HTTP API on 127.0.0.1."""
    return start_sandbox(services=LocalServices(allow_private=True))


def run(
    sandbox: Sandbox,
    plugin: Plugin,
    task: str,
    *,
    config: dict[str, Any] | None = None,
    storage: dict[str, Any] | None = None,
    run_info: RunInfo | None = None,
) -> RunReport:
    request = RunRequest(
        plugin=plugin,
        task=task,
        config=validate_settings(plugin.manifest, config or {}),
        storage=dict(storage or {}),
        limits=resolve_limits(plugin.manifest.limits),
        run=run_info or RunInfo(task=task),
    )
    return sandbox.run(request)


def assert_ok(outcome: RunReport) -> None:
    assert outcome.outcome == "ok", outcome.error


def test_every_example_loads_with_its_tasks() -> None:
    expected = {
        "minute_counter": {"run_every_minute": "minute"},
        "hourly_importer": {"run_every_hour": "hour"},
        "daily_report": {"run_every_day": "day", "sync_orders": "cron"},
        "camel_case": {"runEveryMinute": "minute"},
    }
    for name, tasks in expected.items():
        plugin = load_plugin(EXAMPLES / name)
        assert {t.name: t.cadence for t in plugin.tasks().values()} == tasks, name
        assert (EXAMPLES / name / "README.md").is_file()
    daily = load_plugin(EXAMPLES / "daily_report")
    assert daily.tasks()["sync_orders"].cron == "*/15 * * * *"


def test_minute_counter_counts_in_storage(sandbox: Sandbox) -> None:
    plugin = load_plugin(EXAMPLES / "minute_counter")
    storage: dict[str, Any] = {}
    for expected in (1, 2, 3):
        outcome = run(sandbox, plugin, "run_every_minute", storage=storage)
        assert_ok(outcome)
        assert outcome.result == {"count": expected}
        assert [line.message for line in outcome.logs] == [f"run number {expected}"]
        storage = outcome.apply_to(storage)
    assert storage == {"count": 3}


def test_camel_case_spelling_runs(sandbox: Sandbox) -> None:
    plugin = load_plugin(EXAMPLES / "camel_case")
    outcome = run(sandbox, plugin, "runEveryMinute", storage={"seen": 4})
    assert_ok(outcome)
    assert outcome.result == {"seen": 5, "task": "runEveryMinute"}
    assert [(line.level, line.message) for line in outcome.logs] == [("info", "camelCase run 5")]


def test_daily_report_uses_slot_and_backfilled(sandbox: Sandbox) -> None:
    plugin = load_plugin(EXAMPLES / "daily_report")
    late = RunInfo(task="run_every_day", slot="2024-03-10T00:00:00Z", backfilled=True)
    outcome = run(sandbox, plugin, "run_every_day", run_info=late)
    assert_ok(outcome)
    assert outcome.result["day"] == "2024-03-09"  # the day before the slot, not before today
    assert outcome.result["backfilled"] is True
    assert outcome.storage_writes == {"reports": ["2024-03-09"]}
    assert "(backfilled)" in outcome.logs[0].message

    on_time = RunInfo(task="sync_orders", slot="2024-03-10T10:15:00Z", backfilled=False)
    outcome = run(sandbox, plugin, "sync_orders", storage={"orders_synced": 7}, run_info=on_time)
    assert_ok(outcome)
    assert outcome.result == {"slot": "2024-03-10T10:15:00+00:00", "backfilled": False, "syncs": 8}
    assert outcome.logs[0].level == "info"


def test_hourly_importer_pages_through_the_api_over_runs(sandbox: Sandbox) -> None:
    plugin = load_plugin(EXAMPLES / "hourly_importer")
    secret = "k3y-that-must-reach-the-server"
    with items_api() as api:
        config = {"base_url": api.base_url, "api_key": secret}
        storage: dict[str, Any] = {}
        seen_cursors = []
        for _ in range(3):
            outcome = run(sandbox, plugin, "run_every_hour", config=config, storage=storage)
            assert_ok(outcome)
            storage = outcome.apply_to(storage)
            seen_cursors.append(storage["cursor"])
        assert seen_cursors == ["page-2", "page-3", "page-3"]
        assert storage["total"] == TOTAL_ITEMS
        assert storage["done"] is True
        # Each run fetched exactly the page after the previous run's cursor.
        assert [r["cursor"] for r in api.requests] == [None, "page-2", "page-3"]
        for request in api.requests:
            headers = {k.lower(): v for k, v in request["headers"].items()}  # type: ignore[attr-defined]
            assert headers["x-api-key"] == secret
        # A fourth run, once done, fetches nothing and changes nothing.
        outcome = run(sandbox, plugin, "run_every_hour", config=config, storage=storage)
        assert_ok(outcome)
        assert outcome.result["imported"] == 0
        assert len(api.requests) == 3


def test_hourly_importer_failure_keeps_the_cursor(sandbox: Sandbox) -> None:
    plugin = load_plugin(EXAMPLES / "hourly_importer")
    with items_api() as api:
        config = {"base_url": api.base_url, "api_key": "x"}
        before = {"cursor": "no-such-page", "total": 2, "done": False}
        outcome = run(sandbox, plugin, "run_every_hour", config=config, storage=before)
        assert outcome.outcome == "error"
        assert outcome.error is not None and "404" in outcome.error.message
        assert outcome.apply_to(before) == before


def test_hourly_importer_refuses_loopback_without_allow_private() -> None:
    plugin = load_plugin(EXAMPLES / "hourly_importer")
    with items_api() as api, Sandbox(services=LocalServices(allow_private=False)) as strict:
        outcome = run(
            strict, plugin, "run_every_hour", config={"base_url": api.base_url, "api_key": "x"}
        )
        assert outcome.outcome == "error"
        assert outcome.error is not None and outcome.error.type == "FetchError"
        assert api.requests == []
