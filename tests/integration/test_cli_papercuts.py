"""The command line's small promises: help on every option, global options before the command,
validated choices, ids in listings, stopped nodes shown only for a while, installs that would
never run refused, config_schema defaults checked, and limits lowered to the caps said aloud."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import pytest

from runtime.cli import main
from sandbox.manifest import ManifestError, parse_manifest

if TYPE_CHECKING:
    from conftest import CliRunner


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = [(prefix or "plugin-runtime", group)]
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}".strip()
        if isinstance(command, click.Group):
            found += _commands(command, path)
        else:
            found.append((path, command))
    return found


def test_every_option_of_every_command_has_help() -> None:
    missing = [
        f"{path} {param.opts[0]}"
        for path, command in _commands(main)
        for param in command.params
        if isinstance(param, click.Option) and not (param.help or "").strip()
    ]
    assert missing == []
    paths = [path for path, _command in _commands(main)]
    assert "runs show" in paths and "db stop" in paths


def test_global_database_url_before_the_command(cli_runner: CliRunner) -> None:
    url = cli_runner.database_url
    cli = replace(cli_runner, database_url=None)
    result = cli.ok("--database-url", url, "runs", "--json", database_url=None)
    assert json.loads(result.stdout) == []
    status = cli("--database-url", url, "status", "--json", database_url=None)
    assert json.loads(status.stdout)["database"]["reachable"] is True
    shown = cli("--database-url", url, "runs", "show", "12345", database_url=None)
    assert shown.returncode == 2 and "no run with id 12345" in shown.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["runs", "--outcome", "eror"], "'eror' is not one of"),
        (["runs", "--cadence", "weekly"], "'weekly' is not one of"),
    ],
)
def test_choices_are_validated(cli_runner: CliRunner, args: list[str], expected: str) -> None:
    result = cli_runner(*args)
    assert result.returncode == 2 and expected in result.stderr, result.stderr
    assert "'error'" in result.stderr or "'hour'" in result.stderr


def test_plugins_list_has_ids(cli_runner: CliRunner, test_plugins_dir: Path) -> None:
    cli_runner.ok("plugins", "install", test_plugins_dir / "tiny")
    table = cli_runner.ok("plugins", "list").stdout
    header = next(line for line in table.splitlines() if "name" in line and "version" in line)
    assert header.split()[1] == "id", table


def _plugin(tmp_path: Path, source: str, manifest: dict[str, Any] | None = None) -> Path:
    directory = tmp_path / "p"
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir()
    (directory / "plugin.json").write_text(
        json.dumps({"name": "typo", "version": "1.0.0", "main": "main.py", **(manifest or {})})
    )
    (directory / "main.py").write_text(source)
    return directory


def test_install_refuses_a_plugin_that_would_never_run(
    cli_runner: CliRunner, tmp_path: Path
) -> None:
    typo = _plugin(tmp_path, "def run_evry_hour(meta):\n    return 1\n")
    refused = cli_runner("plugins", "install", typo)
    assert refused.returncode == 2
    assert "has no scheduled function" in refused.stderr
    assert "did you mean `run_every_hour`?" in refused.stderr
    assert "--allow-no-tasks" in refused.stderr
    assert json.loads(cli_runner.ok("plugins", "list", "--json").stdout) == []
    camel = _plugin(tmp_path, "def RunEveryDay(meta):\n    return 1\n")
    assert "did you mean `runEveryDay`?" in cli_runner("plugins", "install", camel).stderr
    forced = cli_runner.ok("plugins", "install", typo, "--allow-no-tasks")
    assert "tasks: none" in forced.stdout


def test_a_default_of_the_wrong_type_is_refused(cli_runner: CliRunner, tmp_path: Path) -> None:
    bad = {"config_schema": {"pages": {"type": "integer", "default": "ten"}}}
    result = cli_runner("plugins", "install", _plugin(tmp_path, "def run_every_hour(m): pass", bad))
    assert result.returncode == 2
    assert "config_schema.pages.default" in result.stderr and "integer" in result.stderr
    for ftype, value in [("boolean", 1), ("number", True), ("string", 3), ("integer", 1.5)]:
        with pytest.raises(ManifestError, match="must be of its type"):
            parse_manifest(
                {
                    "name": "x",
                    "version": "1",
                    "config_schema": {"k": {"type": ftype, "default": value}},
                }
            )
    for ftype, value in [("boolean", False), ("number", 2), ("integer", 3), ("json", {"a": 1})]:
        parse_manifest(
            {"name": "x", "version": "1", "config_schema": {"k": {"type": ftype, "default": value}}}
        )


def test_limits_lowered_to_the_caps_are_said(cli_runner: CliRunner, tmp_path: Path) -> None:
    greedy = _plugin(
        tmp_path,
        "def run_every_hour(meta):\n    return 1\n",
        {"limits": {"timeout_s": 120, "memory_mb": 128}},
    )
    installed = cli_runner.ok("plugins", "install", greedy)
    assert "timeout_s 120 -> 30" in installed.stderr and "memory_mb" not in installed.stderr
    created = cli_runner.ok("configs", "create", "typo")
    assert "timeout_s 120 -> 30" in created.stderr and "--timeout-cap-s" in created.stderr
    ran = cli_runner("run", greedy, "--json", database_url=None)
    assert ran.returncode == 0, ran.stderr
    assert "lowered to the caps: timeout_s 120 -> 30" in ran.stderr
    assert json.loads(ran.stdout)["limits"]["timeout_s"] == 30
    modest = cli_runner("run", greedy, "--timeout-s", "5", "--json", database_url=None)
    assert "lowered" not in modest.stderr


def test_stopped_nodes_are_shown_only_for_a_while(db: Any, cli_runner: CliRunner) -> None:
    db.execute(
        "INSERT INTO plugin_runtime.nodes (id, hostname, pid, stopped_at, heartbeat_at) VALUES "
        "('old-1', 'h', 1, now() - interval '2 hours', now() - interval '2 hours'), "
        "('old-2', 'h', 2, now() - interval '1 day', now() - interval '1 day'), "
        "('recent', 'h', 3, now() - interval '1 minute', now() - interval '1 minute')"
    )
    status = json.loads(cli_runner("status", "--json").stdout)
    assert [n["id"] for n in status["nodes"]] == ["recent"]
    assert status["stopped_nodes_hidden"] == 2
    assert "2 node(s) stopped more than 15 min ago not shown" in cli_runner("status").stdout


def test_logs_of_a_quiet_config_say_so(cli_runner: CliRunner, test_plugins_dir: Path) -> None:
    cli_runner.ok("plugins", "install", test_plugins_dir / "tiny")
    config = cli_runner.ok("configs", "create", "tiny", "-c", "api_key=k").stdout.split()[-1]
    quiet = cli_runner.ok("logs", config)
    assert quiet.stdout == ""
    assert f"config {config} has no log lines and no failed run" in quiet.stderr
    assert f"plugin-runtime runs --config {config}" in quiet.stderr
