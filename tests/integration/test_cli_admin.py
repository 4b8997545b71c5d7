"""The admin commands, run as real subprocesses against a real PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

if TYPE_CHECKING:  # the fixture's type; conftest is not imported at run time
    from conftest import CliRunner

SECRET = "TOPSECRET-4f1d9a"
OTHER_SECRET = "NEWSECRET-77b2c0"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
RUN_FIELDS = {
    "id",
    "config_id",
    "task",
    "slot",
    "attempt",
    "node",
    "state",
    "outcome",
    "started_at",
    "finished_at",
}


def _one_line_error(result: Any) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    line: str = lines[0]
    return line


@pytest.fixture
def tiny_dir(test_plugins_dir: Path) -> Path:
    return test_plugins_dir / "tiny"


@pytest.fixture
def installed(cli_runner: CliRunner, tiny_dir: Path) -> None:
    cli_runner.ok("plugins", "install", tiny_dir)


def _create(cli: CliRunner, *pairs: str) -> int:
    args: list[str] = []
    for pair in pairs:
        args += ["--config", pair]
    result = cli.ok("configs", "create", "tiny", *args)
    return int(result.stdout.strip().splitlines()[-1])


def test_install_list_remove(cli_runner: CliRunner, tiny_dir: Path) -> None:
    result = cli_runner.ok("plugins", "install", tiny_dir)
    assert "tiny" in result.stdout and "run_every_minute" in result.stdout
    listed = json.loads(cli_runner.ok("plugins", "list", "--json").stdout)
    assert [(p["name"], p["version"], p["configs"]) for p in listed] == [("tiny", "1.0.0", 0)]
    assert "tiny" in cli_runner.ok("plugins", "list").stdout  # the table
    cli_runner.ok("plugins", "remove", "tiny")
    assert json.loads(cli_runner.ok("plugins", "list", "--json").stdout) == []
    gone = cli_runner("plugins", "remove", "tiny")
    assert gone.returncode == 2
    assert "no plugin named 'tiny'" in _one_line_error(gone)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ({"schedules": {"nightly": "61 * * * *"}}, "schedules.nightly"),
        ({"schedules": {"nightly": "0 * *"}}, "exactly 5 fields"),
        ({"schedules": {"missing_fn": "0 1 * * *"}}, "no function 'missing_fn'"),
        ({"limits": {"timeout_s": -1}}, "limits.timeout_s"),
    ],
)
def test_invalid_manifest_refused_at_install_with_the_reason(
    cli_runner: CliRunner, tiny_dir: Path, tmp_path: Path, edit: dict[str, Any], reason: str
) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    manifest = json.loads((bad / "plugin.json").read_text())
    manifest.update(edit)
    (bad / "plugin.json").write_text(json.dumps(manifest))
    (bad / "main.py").write_text((bad / "main.py").read_text() + "\ndef nightly(meta):\n    pass\n")
    result = cli_runner("plugins", "install", bad)
    assert result.returncode == 2
    line = _one_line_error(result)
    assert "invalid plugin" in line and reason in line
    assert json.loads(cli_runner.ok("plugins", "list", "--json").stdout) == []


def test_unparseable_plugin_json_refused(cli_runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "plugin.json").write_text('{"name": "broken",')
    result = cli_runner("plugins", "install", tmp_path / "broken")
    assert result.returncode == 2
    assert "not valid JSON" in _one_line_error(result)


@pytest.mark.usefixtures("installed")
def test_configs_create_prints_the_id_on_the_last_line(cli_runner: CliRunner, db: Any) -> None:
    first = _create(cli_runner, f"api_key={SECRET}")
    second = _create(cli_runner, "api_key=x", "batch_size=5", "verbose=off")
    ids = [r["id"] for r in db.execute("SELECT id FROM plugin_runtime.plugin_configs ORDER BY id")]
    assert ids == [first, second]
    configs = json.loads(cli_runner.ok("configs", "list", "--json").stdout)
    assert configs[1]["settings"]["batch_size"] == 5 and configs[1]["settings"]["verbose"] is False
    disabled = int(
        cli_runner.ok("configs", "create", "tiny", "-c", "api_key=k", "--disabled")
        .stdout.strip()
        .splitlines()[-1]
    )
    row = db.execute("SELECT enabled FROM plugin_runtime.plugin_configs WHERE id = %s", [disabled])
    assert row.fetchone() == {"enabled": False}


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--config", "greeting=hi"], "missing required setting 'api_key'"),
        (["--config", "api_key=k", "--config", "batch_size=many"], "setting 'batch_size'"),
        (["--config", "api_key=k", "--config", "colour=red"], "unknown setting 'colour'"),
        (["--config", "api_key"], "expected KEY=VALUE"),
    ],
)
def test_bad_config_refused(cli_runner: CliRunner, args: list[str], expected: str) -> None:
    result = cli_runner("configs", "create", "tiny", *args)
    assert result.returncode == 2
    assert expected in _one_line_error(result)
    assert json.loads(cli_runner.ok("configs", "list", "--json").stdout) == []


@pytest.mark.usefixtures("installed")
def test_secret_values_are_never_printed(cli_runner: CliRunner, db: Any) -> None:
    outputs: list[str] = []

    def run(*args: Any) -> Any:
        result = cli_runner(*args)
        outputs.extend([result.stdout, result.stderr])
        return result

    created = run("configs", "create", "tiny", "--config", f"api_key={SECRET}")
    config_id = int(created.stdout.strip().splitlines()[-1])
    run("configs", "list")
    listed = run("configs", "list", "--json")
    assert json.loads(listed.stdout)[0]["settings"]["api_key"] == "***"
    assert run("configs", "set", config_id, f"api_key={OTHER_SECRET}").returncode == 0
    refused = run("configs", "set", config_id, f"api_key={SECRET}", "batch_size=notanumber")
    assert refused.returncode == 2
    run("configs", "list")
    for text in outputs:
        assert SECRET not in text and OTHER_SECRET not in text
    stored = db.execute("SELECT settings FROM plugin_runtime.plugin_configs").fetchone()
    assert stored["settings"]["api_key"] == OTHER_SECRET  # stored, just never shown


@pytest.mark.usefixtures("installed")
def test_enable_clears_quarantine_disable_and_delete(cli_runner: CliRunner, db: Any) -> None:
    config_id = _create(cli_runner, "api_key=k")
    db.execute(
        "UPDATE plugin_runtime.plugin_configs SET enabled = false, quarantined_at = now(),"
        " quarantine_reason = 'kept timing out', consecutive_failures = 7 WHERE id = %s",
        [config_id],
    )
    [before] = json.loads(cli_runner.ok("configs", "list", "--json").stdout)
    assert before["quarantine_reason"] == "kept timing out"
    assert "quarantined" in cli_runner.ok("configs", "list").stdout

    cli_runner.ok("configs", "enable", config_id)
    row = db.execute(
        "SELECT enabled, quarantined_at, quarantine_reason, consecutive_failures"
        " FROM plugin_runtime.plugin_configs WHERE id = %s",
        [config_id],
    ).fetchone()
    assert row == {
        "enabled": True,
        "quarantined_at": None,
        "quarantine_reason": None,
        "consecutive_failures": 0,
    }

    cli_runner.ok("configs", "disable", config_id)
    [after] = json.loads(cli_runner.ok("configs", "list", "--json").stdout)
    assert after["enabled"] is False

    cli_runner.ok("configs", "delete", config_id)
    assert json.loads(cli_runner.ok("configs", "list", "--json").stdout) == []
    missing = cli_runner("configs", "enable", config_id)
    assert missing.returncode == 2
    assert f"no config with id {config_id}" in _one_line_error(missing)


def test_non_numeric_id_is_bad_input_on_one_line(cli_runner: CliRunner) -> None:
    result = cli_runner("configs", "disable", "seven")
    assert result.returncode == 2
    assert "not a valid integer" in _one_line_error(result)


@pytest.mark.usefixtures("installed")
def test_trigger_and_runs_json(cli_runner: CliRunner, db: Any) -> None:
    config_id = _create(cli_runner, "api_key=k")
    first = int(
        cli_runner.ok("trigger", config_id, "run_every_minute").stdout.strip().splitlines()[-1]
    )
    second = int(
        cli_runner.ok("trigger", config_id, "run_every_hour").stdout.strip().splitlines()[-1]
    )
    db.execute(
        "UPDATE plugin_runtime.runs SET state = 'done', outcome = 'ok', node = 'node-a',"
        " started_at = '2026-11-27T10:00:00.5Z', finished_at = '2026-11-27T10:00:01Z',"
        " slot = '2026-11-27T10:00:00Z' WHERE id = %s",
        [first],
    )

    runs = json.loads(cli_runner.ok("runs", "--json").stdout)
    assert [r["id"] for r in runs] == [second, first]  # newest first
    for run in runs:
        assert set(run) >= RUN_FIELDS
    done = runs[1]
    assert done["slot"] == "2026-11-27T10:00:00Z"
    assert done["started_at"] == "2026-11-27T10:00:00.500000Z"
    assert done["finished_at"] == "2026-11-27T10:00:01Z"
    assert (
        done["config_id"],
        done["task"],
        done["state"],
        done["outcome"],
        done["node"],
        done["attempt"],
    ) == (config_id, "run_every_minute", "done", "ok", "node-a", 1)
    queued = runs[0]
    assert (
        queued["state"] == "queued" and queued["outcome"] is None and queued["started_at"] is None
    )
    assert ISO_UTC.match(queued["slot"])

    def ids(*args: Any) -> list[int]:
        return [r["id"] for r in json.loads(cli_runner.ok("runs", "--json", *args).stdout)]

    assert ids("--task", "run_every_hour") == [second]
    assert ids("--outcome", "ok") == [first]
    assert ids("--config", config_id, "--limit", "1") == [second]
    assert ids("--config", config_id + 1) == []
    assert "run_every_hour" in cli_runner.ok("runs").stdout  # the table

    unknown = cli_runner("trigger", config_id, "no_such_task")
    assert unknown.returncode == 2
    assert "no task 'no_such_task'" in _one_line_error(unknown)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("args", [["runs"], ["configs", "list"], ["db", "migrate"]])
def test_database_down_exits_3_with_a_clear_message(cli_runner: CliRunner, args: list[str]) -> None:
    port = _closed_port()
    url = f"postgresql://postgres:hunter2-password@127.0.0.1:{port}/postgres"
    result = cli_runner(*args, database_url=url)
    assert result.returncode == 3
    line = _one_line_error(result)
    assert f"cannot reach PostgreSQL at 127.0.0.1:{port}" in line
    assert "connection refused" in line
    assert "hunter2" not in result.stderr + result.stdout


@pytest.mark.slow
def test_embedded_server_is_the_default(
    cli_runner: CliRunner, tmp_path: Path, tiny_dir: Path
) -> None:
    """No --database-url and no environment: the embedded server in the user's data directory
    (here $XDG_DATA_HOME), whatever the working directory, left running between commands (the
    second command, from another directory, reuses it and sees the first one's work); each says
    where it is on stderr; `db stop` stops it."""
    # Not in tmp_path: as root the server runs as the `pgserver` user, and any pytest starting
    # meanwhile (another clone's) makes /tmp/pytest-of-root private again.
    base = Path(tempfile.mkdtemp(prefix="plugin-runtime-embedded-"))
    base.chmod(0o755)
    first, second = base / "a", base / "b"
    first.mkdir()
    second.mkdir()
    env = {"XDG_DATA_HOME": str(base / "xdg"), "PLUGIN_RUNTIME_DATA_DIR": ""}
    data_dir = base / "xdg" / "plugin-runtime" / "pgdata"
    cli = replace(cli_runner, database_url=None, cwd=first)
    try:
        installed = cli.ok("plugins", "install", tiny_dir, timeout=120, env=env)
        assert (data_dir / "PG_VERSION").is_file()
        assert not (first / ".pgdata").exists()
        assert f"embedded PostgreSQL in {data_dir}: started" in installed.stderr
        listed = replace(cli, cwd=second).ok("plugins", "list", "--json", env=env)
        assert [p["name"] for p in json.loads(listed.stdout)] == ["tiny"]
        assert listed.stderr.count("embedded PostgreSQL") == 1
        assert f"embedded PostgreSQL in {data_dir}: reused (pid " in listed.stderr
        stopped = cli.ok("db", "stop", env=env)
        assert f"stopped the embedded PostgreSQL in {data_dir}" in stopped.stdout
        assert not (data_dir / "postmaster.pid").exists()
        again = cli.ok("db", "stop", env=env)
        assert "no embedded PostgreSQL is running" in again.stdout
    finally:
        _stop_embedded(data_dir)
        shutil.rmtree(base, ignore_errors=True)


def test_data_dir_is_set_by_the_environment(cli_runner: CliRunner, tmp_path: Path) -> None:
    """`db stop` on a directory with no server says so (and never starts one)."""
    cli = replace(cli_runner, database_url=None)
    where = tmp_path / "elsewhere"
    result = cli.ok("db", "stop", env={"PLUGIN_RUNTIME_DATA_DIR": str(where)})
    assert f"no embedded PostgreSQL is running in {where}" in result.stdout
    assert not where.exists()


def _stop_embedded(data_dir: Path) -> None:
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.is_file():
        return
    pid = int(pid_file.read_text().splitlines()[0])
    os.kill(pid, signal.SIGINT)  # PostgreSQL's "fast shutdown"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"embedded PostgreSQL (pid {pid}) did not stop")


def test_runs_against_an_unmigrated_database_migrates_first(
    cli_runner: CliRunner, empty_database_url: str
) -> None:
    cli = replace(cli_runner, database_url=empty_database_url)
    assert json.loads(cli.ok("runs", "--json").stdout) == []
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('plugin_runtime.runs')").fetchone() != (None,)
