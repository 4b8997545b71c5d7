"""Layer 1 details that plugin authors meet: what compiles, what imports, what C code may import."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import RunRequest, Sandbox, load_plugin
from sandbox.policy import PluginCodeError, compile_plugin


def _plugin(tmp_path: Path, source: str) -> Path:
    (tmp_path / "plugin.json").write_text('{"name": "p", "limits": {"timeout_s": 5}}')
    (tmp_path / "main.py").write_text(source)
    return tmp_path


def test_datetime_strptime_works_in_a_plugin(tmp_path: Path, sandbox: Sandbox) -> None:
    # datetime's C code imports _strptime lazily through the plugin's guarded __import__.
    plugin = load_plugin(
        _plugin(
            tmp_path,
            (
                "import datetime\n"
                "def run_every_minute(meta):\n"
                "    return datetime.datetime.strptime('2026-01-02', '%Y-%m-%d').isoformat()\n"
            ),
        )
    )
    outcome = sandbox.run(RunRequest(plugin=plugin, task="run_every_minute"))
    assert outcome.outcome == "ok", outcome.error
    assert outcome.result == "2026-01-02T00:00:00"


def test_plugin_code_cannot_name_the_internal_import() -> None:
    with pytest.raises(PluginCodeError, match="line 1"):
        compile_plugin("import _strptime\n")
    with pytest.raises(PluginCodeError, match="guards"):
        compile_plugin("x = __import__('_strptime')\n")
