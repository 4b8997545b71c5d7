"""The example's own tests, written as a plugin author would, with the plugin-runtime pytest kit."""

from pathlib import Path

from runtime.testing.pytest_plugin import PluginRunner, assert_ok

HERE = Path(__file__).parent


def test_counts_its_runs_in_storage(plugin_runner: PluginRunner) -> None:
    first = plugin_runner.run(HERE, keep_storage=True)
    assert_ok(first)
    second = plugin_runner.run(HERE, keep_storage=True)
    assert_ok(second)
    assert second.storage == {"count": 2}
    assert second.result == {"count": 2}
    assert second.storage_writes == {"count": 2}


def test_continues_from_existing_storage(plugin_runner: PluginRunner) -> None:
    result = plugin_runner.run(HERE, storage={"count": 41})
    assert_ok(result)
    assert result.storage["count"] == 42
    assert any("42" in message for message in result.messages)
