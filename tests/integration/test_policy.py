"""Layer 1 details that plugin authors meet: what compiles, what imports, what C code may import."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def _globals_for(source: str) -> dict[str, Any]:
    from sandbox import policy

    class Sink:
        def __call__(self, *_: Any) -> Sink:
            return self

        def _call_print(self, *args: Any, **kwargs: Any) -> None:
            pass

    code = compile_plugin(source)
    glb = policy.make_globals(policy.ImportGuard(), Sink(), name="unit_plugin")
    exec(code, glb)
    return glb


def test_plugin_code_does_not_inherit_future_flags() -> None:
    # This module has `from __future__ import annotations`; plugin code must not get it.
    glb = _globals_for("def f(x: int) -> str:\n    return str(x)\n")
    assert glb["f"].__annotations__ == {"x": int, "return": str}


def test_plugin_may_ask_for_future_annotations() -> None:
    glb = _globals_for(
        "from __future__ import annotations\n"
        "from dataclasses import dataclass\n"
        "@dataclass\n"
        "class Row:\n"
        "    items: dict[str, int]\n"
    )
    assert glb["Row"].__annotations__ == {"items": "dict[str, int]"}
    assert glb["Row"]({"a": 1}).items == {"a": 1}


def test_augmented_assignment_evaluates_each_operand_once_in_order() -> None:
    glb = _globals_for(
        "calls = []\n"
        "class Box:\n"
        "    def __init__(self):\n"
        "        self.n = 1\n"
        "box = Box()\n"
        "data = {'k': [1]}\n"
        "def obj():\n"
        "    calls.append('obj')\n"
        "    return box\n"
        "def key():\n"
        "    calls.append('key')\n"
        "    return 'k'\n"
        "def val(v):\n"
        "    calls.append('val')\n"
        "    return v\n"
        "obj().n += val(2)\n"
        "alias = data['k']\n"
        "data[key()] += [val(2)]\n"
    )
    assert glb["calls"] == ["obj", "val", "key", "val"]
    assert glb["box"].n == 3
    assert glb["data"] == {"k": [1, 2]} and glb["alias"] is glb["data"]["k"]  # in place


def test_every_refused_construct_is_reported_at_once_in_the_authors_words() -> None:
    source = (
        "import os\n"
        "from json import decoder\n"
        "def run_every_minute(meta):\n"
        "    data = open('x').read()\n"
        "    _getattr_ = 1\n"
        "    return ().__class__.__subclasses__()\n"
        "async def later():\n"
        "    pass\n"
    )
    with pytest.raises(PluginCodeError) as info:
        compile_plugin(source)
    problems = info.value.problems
    assert [p.split(":")[0] for p in problems] == [
        "main.py, line 1",
        "main.py, line 2",
        "main.py, line 4",
        "main.py, line 5",
        "main.py, line 6",
        "main.py, line 7",
    ]
    text = str(info.value)
    assert "meta.config" in text and "meta.storage" in text and "isinstance()" in text
    for jargon in ("AnnAssign", "attribute-less", "statements are not allowed", "FunctionDef"):
        assert jargon not in text


def test_ordinary_constructs_compile() -> None:
    compile_plugin(
        "from dataclasses import dataclass\n"
        "import typing, enum, contextlib, abc, collections.abc, zoneinfo, secrets, csv, io\n"
        "import html, string, types, __future__, decimal, fractions, statistics, uuid\n"
        "import hmac, hashlib, base64, urllib.parse\n"
        "from plugin_runtime import FetchError, SecurityError\n"
        "@dataclass\n"
        "class A:\n"
        "    x: int = 0\n"
        "    _hidden: str = ''\n"
        "    def __post_init__(self):\n"
        "        self._seen = True\n"
        "    def __repr__(self):\n"
        "        return super().__repr__()\n"
        "def f(a):\n"
        "    a.x += 1\n"
        "    d = {}\n"
        "    d['k'] = d.get('k', 0)\n"
        "    d['k'] += 1\n"
        "    y: int = 3\n"
        "    return type(a).__name__, y\n"
    )


def test_plugins_install_lists_every_problem(cli_runner: Any, tmp_path: Path) -> None:
    plugin = tmp_path / "bad"
    plugin.mkdir()
    (plugin / "plugin.json").write_text('{"name": "bad"}')
    (plugin / "main.py").write_text(
        "import os\nimport subprocess\n\ndef run_every_minute(meta):\n    return eval('1')\n"
    )
    result = cli_runner("plugins", "install", plugin)
    assert result.returncode == 2
    assert "3 problem(s) in main.py" in result.stderr
    for line in ("line 1: import of 'os'", "line 2: import of 'subprocess'", "line 5: eval()"):
        assert line in result.stderr
    assert "invalid plugin" in result.stderr


def test_run_reports_every_problem(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    plugin = _plugin(
        tmp_path,
        "import socket\n\nclass A:\n    pass\n\ndef run_every_minute(meta):\n"
        "    x = compile('1', 'f', 'eval')\n    return A.__mro__\n",
    )
    result = subprocess.run(
        [sys.executable, "-m", "runtime", "run", str(plugin), "run_every_minute", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["outcome"] == "bad_plugin"
    lines = report["error"]["message"].splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "main.py, line 1",
        "main.py, line 7",
        "main.py, line 8",
    ]
    assert "meta.fetch" in lines[0] and "compile()" in lines[1] and "isinstance()" in lines[2]
