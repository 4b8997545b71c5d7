"""`plugin-runtime run`, the real command in a subprocess: exit codes, JSON shape, one-line errors,
the storage file across runs, and secrets never echoed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from items_api import items_api

from sandbox import SANDBOX_OUTCOMES

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
SECRET = "sk-live-DO-NOT-PRINT-4242"


def run_cli(
    *args: Any, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PLUGIN_RUNTIME_DATABASE_URL"}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "runtime", "run", *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO,
        env=env,
    )


def run_json(*args: Any) -> tuple[int, dict[str, Any]]:
    result = run_cli(*args, "--json")
    assert result.stdout.count("\n") == 1, f"exactly one JSON line expected:\n{result.stdout}"
    return result.returncode, json.loads(result.stdout)


def assert_bad_input(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"one line expected on stderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def make_plugin(root: Path, name: str, manifest: Any, source: str) -> Path:
    directory = root / name
    directory.mkdir()
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    (directory / "plugin.json").write_text(text)
    (directory / "main.py").write_text(source)
    return directory


def test_ok_run_json_shape() -> None:
    code, data = run_json(EXAMPLES / "minute_counter")
    assert code == 0
    for key in ("outcome", "duration_ms", "logs", "error", "result", "storage", "layers"):
        assert key in data, key
    assert data["outcome"] == "ok"
    assert data["task"] == "run_every_minute"  # the only task: no name needed
    assert isinstance(data["duration_ms"], int | float) and data["duration_ms"] > 0
    assert data["logs"] == [{"level": "info", "message": "run number 1"}]
    assert data["error"] is None
    assert data["result"] == {"count": 1}
    assert data["storage"] == {"count": 1}
    assert data["layers"] and all(isinstance(v, bool) for v in data["layers"].values())
    assert data["layers"]["restricted_python"] is True
    # every inactive layer says why
    assert set(data["layer_reasons"]) == {k for k, v in data["layers"].items() if not v}
    assert data["limits"] == {"timeout_s": 5.0, "cpu_s": 5.0, "memory_mb": 128}


def test_readable_report() -> None:
    result = run_cli(
        EXAMPLES / "daily_report", "sync_orders", "--slot", "2024-01-01T00:15:00Z", "--backfilled"
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "outcome ok" in out
    assert "catching up on the sync for 2024-01-01T00:15:00+00:00" in out
    assert "+ orders_synced = 1" in out
    assert "sandbox layers" in out


def test_failed_run_exits_1_with_error_and_traceback() -> None:
    code, data = run_json(EXAMPLES / "faulty" / "exception")
    assert code == 1
    assert data["outcome"] == "error"
    assert data["error"]["type"] == "ValueError"
    assert (
        data["error"]["traceback"][-1]
        == 'File "main.py", line 2, in parse_amount: return int(text)'
    )
    assert data["result"] is None
    assert data["storage"] == {}  # the run's write is dropped


def test_timeout_flag_overrides_plugin_limit() -> None:
    code, data = run_json(EXAMPLES / "faulty" / "infinite_loop", "--timeout-s", "0.5")
    assert code == 1
    assert data["outcome"] == "timeout"
    assert data["limits"]["timeout_s"] == 0.5
    assert data["duration_ms"] < 1500
    # and the operator cap still applies to a flag asking for more
    code, data = run_json(EXAMPLES / "minute_counter", "--timeout-s", "9999")
    assert code == 0 and data["limits"]["timeout_s"] == 30.0


def test_storage_file_advances_and_is_unchanged_on_failure(tmp_path: Path) -> None:
    storage = tmp_path / "storage.json"
    for expected in (1, 2, 3):
        code, data = run_json(EXAMPLES / "minute_counter", "--storage-file", storage)
        assert code == 0
        assert data["result"] == {"count": expected}
        assert json.loads(storage.read_text()) == {"count": expected}

    # A plugin that writes then fails leaves the file byte for byte as it was.
    storage.write_text('{"count": 3, "keep": "me"}')
    before = storage.read_bytes()
    code, data = run_json(EXAMPLES / "faulty" / "exception", "--storage-file", storage)
    assert code == 1
    assert data["storage"] == {"count": 3, "keep": "me"}
    assert storage.read_bytes() == before


def test_importer_cursor_advances_over_runs_and_secret_is_never_printed(tmp_path: Path) -> None:
    storage = tmp_path / "importer.json"
    with items_api() as api:
        args = [
            EXAMPLES / "hourly_importer",
            "--allow-private",
            "--storage-file",
            storage,
            "--config",
            f"base_url={api.base_url}",
            "--config",
            f"api_key={SECRET}",
        ]
        outputs = []
        for _ in range(3):
            result = run_cli(*args, "--json")
            assert result.returncode == 0, result.stdout + result.stderr
            outputs.append(result.stdout + result.stderr)
        text = run_cli(*args)  # the readable report too
        outputs.append(text.stdout + text.stderr)
        assert [r["cursor"] for r in api.requests] == [None, "page-2", "page-3"]
        assert all(
            {k.lower(): v for k, v in r["headers"].items()}["x-api-key"] == SECRET  # type: ignore[attr-defined]
            for r in api.requests
        )
    assert json.loads(storage.read_text())["total"] == 5
    for output in outputs:
        assert SECRET not in output
    fetch = json.loads(outputs[0])["fetch_calls"][0]
    assert fetch["headers"]["X-Api-Key"] == "***"


def test_secret_not_echoed_in_config_errors(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"api_key": SECRET, "max_pages": "many"}))
    result = run_cli(
        EXAMPLES / "hourly_importer",
        "--config-file",
        config,
        "--config",
        "base_url=http://127.0.0.1:1",
    )
    assert_bad_input(result, "max_pages")
    assert SECRET not in result.stderr
    result = run_cli(EXAMPLES / "hourly_importer", "--config", f"api_key={SECRET}")
    assert_bad_input(result, "missing required setting 'base_url'")
    assert SECRET not in result.stderr


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["no/such/dir"], ["no such plugin directory"]),
        ([EXAMPLES / "daily_report"], ["several tasks", "run_every_day", "sync_orders"]),
        ([EXAMPLES / "daily_report", "nope"], ["no task 'nope'", "run_every_day, sync_orders"]),
        ([EXAMPLES / "minute_counter", "--bogus"], ["--bogus"]),
        ([EXAMPLES / "minute_counter", "--timeout-s", "soon"], ["--timeout-s"]),
        ([EXAMPLES / "minute_counter", "--memory-mb", "0"], ["--memory-mb"]),
        ([EXAMPLES / "minute_counter", "--config", "x=1"], ["unknown setting 'x'"]),
        ([EXAMPLES / "minute_counter", "--config", "novalue"], ["KEY=VALUE"]),
        ([EXAMPLES / "minute_counter", "--config-file", "missing.json"], ["no such file"]),
        ([EXAMPLES / "minute_counter", "--slot", "yesterday"], ["--slot"]),
        (
            [EXAMPLES / "minute_counter", "--storage-file", "no/such/dir/s.json"],
            ["directory does not exist"],
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[Any], fragments: list[str]) -> None:
    assert_bad_input(run_cli(*args), *fragments)


def test_bad_storage_file_is_bad_input(tmp_path: Path) -> None:
    storage = tmp_path / "s.json"
    storage.write_text("[1, 2]")
    assert_bad_input(
        run_cli(EXAMPLES / "minute_counter", "--storage-file", storage), "must be a JSON object"
    )


def test_malformed_manifest_is_bad_input(tmp_path: Path) -> None:
    source = "def run_every_minute(meta):\n    return 1\n"
    broken_json = make_plugin(tmp_path, "broken_json", '{"name": "x",', source)
    assert_bad_input(run_cli(broken_json), "plugin.json", "not valid JSON")
    bad_field = make_plugin(
        tmp_path, "bad_field", {"name": "x", "limits": {"timeout_s": -1}}, source
    )
    assert_bad_input(run_cli(bad_field), "limits.timeout_s")
    missing_fn = make_plugin(
        tmp_path, "missing_fn", {"name": "x", "schedules": {"sync": "*/5 * * * *"}}, source
    )
    assert_bad_input(run_cli(missing_fn), "schedules.sync")
    no_tasks = make_plugin(tmp_path, "no_tasks", {"name": "x"}, "def helper(meta):\n    pass\n")
    assert_bad_input(run_cli(no_tasks), "no scheduled function")


def test_syntax_error_is_a_bad_plugin_run(tmp_path: Path) -> None:
    plugin = make_plugin(
        tmp_path, "syntax", {"name": "syntax"}, "def run_every_minute(meta):\n    return (1,\n"
    )
    code, data = run_json(plugin)
    assert code == 1
    assert data["outcome"] == "bad_plugin"
    assert "line 2" in data["error"]["message"] and "syntax error" in data["error"]["message"]


def test_forbidden_import_is_a_bad_plugin_run() -> None:
    code, data = run_json(EXAMPLES / "faulty" / "forbidden_import")
    assert code == 1
    assert data["outcome"] == "bad_plugin"
    assert "line 2: import of 'os' is not allowed" in data["error"]["message"]


def test_runs_from_any_directory_with_a_copied_plugin(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES / "camel_case", tmp_path / "cc")
    result = run_cli("cc", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["outcome"] in SANDBOX_OUTCOMES and data["outcome"] == "ok"
    assert data["result"] == {"seen": 1, "task": "runEveryMinute"}
