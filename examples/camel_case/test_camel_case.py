from pathlib import Path

from runtime.testing.pytest_plugin import PluginRunner, assert_ok

HERE = Path(__file__).parent


def test_camel_case_spelling_is_scheduled_and_runs(plugin_runner: PluginRunner) -> None:
    result = plugin_runner.run(HERE)  # its one scheduled function: runEveryMinute
    assert_ok(result)
