"""`serve` options from flags, PLUGIN_RUNTIME_<OPTION> variables and a TOML file, in that order of
precedence; `--print-config` says which applies and where it came from, secrets masked."""

from __future__ import annotations

import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from runtime.cli import main
from runtime.cli.config_sources import mask, option_key

SERVE = main.commands["serve"]
CLEAN = {"PLUGIN_RUNTIME_DATABASE_URL": None, "PLUGIN_RUNTIME_CONFIG_FILE": None}


def print_config(*args: str, env: dict[str, str | None] | None = None) -> click.testing.Result:
    return CliRunner().invoke(
        main, ["serve", *args, "--print-config"], env={**CLEAN, **(env or {})}
    )


def parsed(result: click.testing.Result) -> tuple[dict[str, object], dict[str, str]]:
    """The printed TOML's values, and each key's origin comment."""
    assert result.exit_code == 0, result.output
    values = tomllib.loads(result.output)["serve"]
    origins = {}
    for line in result.output.splitlines()[1:]:
        body, _, origin = line.rpartition("  # ")
        key = body.lstrip("# ").split(" = ")[0].strip()
        origins[key] = origin.strip()
    return values, origins


def test_flag_beats_environment_beats_file_beats_default(tmp_path: Path) -> None:
    file = tmp_path / "node.toml"
    file.write_text(
        '[serve]\nconcurrency = 8\nhttp = "0.0.0.0:9100"\ntimeout_cap_s = 20\n'
        "[other]\nanything = 1\n"
    )
    result = print_config(
        "--config-file",
        str(file),
        "--timeout-cap-s",
        "40",
        env={"PLUGIN_RUNTIME_CONCURRENCY": "12", "PLUGIN_RUNTIME_TIMEOUT_CAP_S": "25"},
    )
    values, origins = parsed(result)
    assert values["concurrency"] == 12 and origins["concurrency"] == (
        "environment PLUGIN_RUNTIME_CONCURRENCY"
    )
    assert values["timeout-cap-s"] == 40.0 and origins["timeout-cap-s"] == "flag --timeout-cap-s"
    assert values["http"] == "0.0.0.0:9100" and origins["http"] == f"file {file}"
    assert values["quarantine-after"] == 10 and origins["quarantine-after"] == "default"
    assert origins["node-id"] == "default" and "node-id" not in values  # not set: a comment


def test_config_file_from_the_environment_and_round_trip(tmp_path: Path) -> None:
    file = tmp_path / "node.toml"
    file.write_text("[serve]\nconcurrency = 3\nlog-format = 'json'\ndaily-window-d = 2.5\n")
    first, _ = parsed(print_config(env={"PLUGIN_RUNTIME_CONFIG_FILE": str(file)}))
    assert (first["concurrency"], first["log-format"], first["daily-window-d"]) == (3, "json", 2.5)
    # What --print-config prints is itself a config file giving the same values.
    again = tmp_path / "again.toml"
    again.write_text(print_config("--config-file", str(file)).output)
    second, origins = parsed(print_config("--config-file", str(again)))
    assert second == first
    assert origins["concurrency"] == f"file {again}"


def test_secrets_are_masked() -> None:
    result = print_config(env={"PLUGIN_RUNTIME_DATABASE_URL": "postgresql://app:hunter2@db:5432/x"})
    values, origins = parsed(result)
    assert "hunter2" not in result.output
    assert values["database-url"] == "postgresql://app:***@db:5432/x"
    assert origins["database-url"] == "environment PLUGIN_RUNTIME_DATABASE_URL"
    assert mask("database-url", "not a url") == "***"
    assert mask("admin-token", "abc") == "***"
    assert mask("concurrency", 5) == 5


def test_every_serve_option_has_its_environment_variable_and_file_key() -> None:
    options = [p for p in SERVE.params if isinstance(p, click.Option) and p.name != "help"]
    configurable = [p for p in options if p.name not in ("config_file", "print_config")]
    assert len(configurable) >= 20
    for param in configurable:
        assert param.envvar == "PLUGIN_RUNTIME_" + option_key(param).upper().replace("-", "_")
    help_text = CliRunner().invoke(main, ["serve", "--help"]).output
    assert "PLUGIN_RUNTIME_TIMEOUT_CAP_S" in help_text and "--config-file" in help_text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[serve]\nconcurency = 3\n", "unknown key 'concurency' in [serve]"),
        ("[serve]\nconcurrency = 'many'\n", "'concurrency': 'many' is not a valid integer"),
        ("[serve]\nconcurrency = 0\n", "'concurrency': 0 is not in the range"),
        ("[serve]\nhttp = [1, 2]\n", "'http' must be a single value"),
        ("[serve\n", "is not valid TOML"),
        ("serve = 3\n", "'serve' must be a table"),
    ],
)
def test_a_bad_file_is_a_clear_error_naming_file_and_key(
    tmp_path: Path, content: str, message: str
) -> None:
    file = tmp_path / "bad.toml"
    file.write_text(content)
    result = print_config("--config-file", str(file))
    assert result.exit_code == 2
    assert message in result.output and str(file) in result.output


def test_missing_file_and_bad_environment_values_are_errors(tmp_path: Path) -> None:
    missing = print_config("--config-file", str(tmp_path / "nope.toml"))
    assert missing.exit_code == 2 and "cannot read" in missing.output
    bad_env = print_config(env={"PLUGIN_RUNTIME_CONCURRENCY": "lots"})
    assert bad_env.exit_code == 2 and "'lots' is not a valid integer" in bad_env.output


def test_environment_values_reach_the_command() -> None:
    # A test-only option set from the environment is refused without --testing, like a flag.
    result = CliRunner().invoke(main, ["serve"], env={**CLEAN, "PLUGIN_RUNTIME_TIME_SCALE": "10"})
    assert result.exit_code == 2
    assert "for testing only" in result.output


def test_a_flag_before_the_command_beats_the_environment() -> None:
    result = CliRunner().invoke(
        main,
        ["--database-url", "postgresql://flag@a/db", "serve", "--print-config"],
        env={**CLEAN, "PLUGIN_RUNTIME_DATABASE_URL": "postgresql://env@b/db"},
    )
    values, origins = parsed(result)
    assert values["database-url"] == "postgresql://flag@a/db"
    assert origins["database-url"] == "flag --database-url"
