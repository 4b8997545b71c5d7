"""The plugin author's kit itself: it reports failures, enforces allowed_hosts, carries storage."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.testing.pytest_plugin import FakeHttp, PluginRunner, assert_ok, assert_outcome

FAULTY = Path(__file__).resolve().parents[2] / "examples" / "faulty"


def test_assert_ok_fails_with_the_error_and_traceback(plugin_runner: PluginRunner) -> None:
    result = plugin_runner.run(FAULTY / "exception")
    with pytest.raises(pytest.fail.Exception) as info:
        assert_ok(result)
    assert "ValueError" in str(info.value) and "main.py" in str(info.value)
    assert_outcome(result, "error")
    assert result.storage == result.storage_before, "a failed run leaves storage unchanged"


def test_limits_are_real(plugin_runner: PluginRunner) -> None:
    result = plugin_runner.run(FAULTY / "infinite_loop", timeout_s=1)
    assert_outcome(result, "timeout")
    assert 900 <= result.duration_ms <= 3000


def test_fake_http_records_calls_and_answers_404_without_a_route(
    tmp_path: Path, plugin_runner: PluginRunner
) -> None:
    (tmp_path / "plugin.json").write_text('{"name": "f", "allowed_hosts": ["api.test"]}')
    (tmp_path / "main.py").write_text(
        "def run_every_minute(meta):\n"
        "    r = meta.fetch('https://api.test/x?a=1', headers={'H': 'v'})\n"
        "    return r.status\n"
    )
    http = FakeHttp()
    result = plugin_runner.run(tmp_path, http=http)
    assert_ok(result)
    assert result.result == 404
    assert http.calls[0].query == {"a": "1"} and http.calls[0].headers == {"H": "v"}
    assert result.fetch_calls[0]["url"] == "https://api.test/x?a=1"


def test_unknown_task_is_a_clear_error(plugin_runner: PluginRunner) -> None:
    with pytest.raises(ValueError, match="no scheduled function 'nope'"):
        plugin_runner.run(FAULTY / "exception", "nope")
