"""The daily report and its cron task, given a slot and a backfill flag as the scheduler would."""

from pathlib import Path

from runtime.testing.pytest_plugin import PluginRunner, assert_ok

HERE = Path(__file__).parent


def test_daily_run_uses_its_slot(plugin_runner: PluginRunner) -> None:
    result = plugin_runner.run(HERE, "run_every_day", slot="2026-03-01T00:00:00Z", backfilled=True)
    assert_ok(result)
    assert "2026-03-01" in str(result.result)


def test_cron_task_runs(plugin_runner: PluginRunner) -> None:
    result = plugin_runner.run(HERE, "sync_orders", slot="2026-03-01T10:15:00Z")
    assert_ok(result)
