"""docs/cli.md promises "never a traceback", and plugin text is data in every output: this feeds
every command hostile names, versions, defaults, errors, results and log text (terminal escape
sequences, OSC 52 clipboard writes, rich markup, bidi overrides, lone surrogates, NaN) and checks
that no command prints a traceback, a raw control character or interpreted markup, that every
`--json` output is strict JSON, and that a secret a plugin logged is never shown."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from runtime.text import Masker

if TYPE_CHECKING:
    from conftest import CliRunner

ESC = "\x1b"
# A screen clear, a forged "outcome ok" line, a clipboard write, a bell, a bidi override.
HOSTILE = f"{ESC}[2J{ESC}[H\routcome ok{ESC}]52;c;cm0gLXJmIH4={ESC}\\\x07\u202eevil\x9b31m"
MARKUP = "[/][bold red]CRITICAL[link=https://evil.example]x[/link]"
SECRET = "hunter2-secret"
# Control characters a terminal acts on; \n separates lines and is allowed as such.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _check(result: Any, *, codes: tuple[int, ...] = (0, 1)) -> str:
    out = result.stdout + result.stderr
    assert "Traceback" not in out, out
    assert result.returncode in codes, (result.returncode, out)
    found = RAW_CONTROL.search(out)
    assert found is None, f"raw control character {found.group()!r} in: {out!r}"
    assert ESC not in out
    return str(result.stdout)


@pytest.fixture
def hostile_db(cli_runner: CliRunner, database_url: str, tmp_path: Path) -> dict[str, int]:
    directory = tmp_path / "hostile"
    directory.mkdir()
    (directory / "plugin.json").write_text(
        json.dumps(
            {
                "name": "hostile",
                "version": MARKUP[:60],
                "description": HOSTILE + MARKUP,
                "config_schema": {
                    "token": {"type": "string", "secret": True},
                    "motto": {"type": "string", "default": HOSTILE + MARKUP},
                    "blob": {"type": "json", "default": {"k": HOSTILE, MARKUP: [1.5]}},
                },
            }
        )
    )
    (directory / "main.py").write_text("def run_every_minute(meta):\n    return 1\n")
    _check(cli_runner("plugins", "install", directory))
    config_id = int(
        _check(cli_runner("configs", "create", "hostile", "-c", f"token={SECRET}")).split()[-1]
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        # What the database may hold from anywhere (an older version, psql, a node): hostile
        # text in every column a command prints.
        conn.execute(
            "UPDATE plugin_runtime.plugins SET version = %s WHERE name = 'hostile'",
            (HOSTILE + MARKUP,),
        )
        conn.execute(
            "UPDATE plugin_runtime.plugin_configs SET quarantined_at = now(), "
            "quarantine_reason = %s, consecutive_failures = 12 WHERE id = %s",
            (HOSTILE + MARKUP, config_id),
        )
        conn.execute(
            "INSERT INTO plugin_runtime.nodes (id, hostname, pid, layers, stats) "
            "VALUES (%s, %s, 1, %s, %s)",
            (
                "node" + HOSTILE,
                MARKUP + HOSTILE,
                Jsonb({HOSTILE: False, "seccomp": True}),
                Jsonb({"running": 0}),
            ),
        )
        run_id = conn.execute(
            "INSERT INTO plugin_runtime.runs (config_id, task, slot, state, outcome, node, "
            "started_at, finished_at, duration_ms, error, result) VALUES (%s, %s, now(), "
            "'done', 'error', %s, now(), now(), 'NaN', %s, %s) RETURNING id",
            (
                config_id,
                "run_every_minute" + HOSTILE,
                MARKUP + HOSTILE,
                Jsonb(
                    {"type": HOSTILE, "message": f"token {SECRET} {HOSTILE}", "traceback": [MARKUP]}
                ),
                Jsonb({"r": HOSTILE + SECRET}),
            ),
        ).fetchone()[0]
        for message in (
            HOSTILE,
            MARKUP,
            f"my token is {SECRET}!",
            "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
        ):
            conn.execute(
                "INSERT INTO plugin_runtime.logs (run_id, config_id, level, message) "
                "VALUES (%s, %s, %s, %s)",
                (run_id, config_id, "info" + HOSTILE, message),
            )
    return {"config": config_id, "run": run_id}


def test_no_command_shows_plugin_text_raw(
    cli_runner: CliRunner, hostile_db: dict[str, int]
) -> None:
    config_id, run_id = hostile_db["config"], hostile_db["run"]

    plugins = _check(cli_runner("plugins", "list"))
    assert "[/]" in plugins or "[/" in plugins  # printed, not interpreted (the cell may fold)
    assert "\\x1b[2J" in plugins.replace("\n", "").replace(" ", "").replace("│", "")

    configs = _check(cli_runner("configs", "list"))
    assert SECRET not in configs and "***" in configs

    runs = _check(cli_runner("runs"))
    assert "\\x1b" in runs.replace("\n", "").replace(" ", "").replace("│", "")

    logs = _check(cli_runner("logs", config_id))
    assert SECRET not in logs and "my token is ***!" in logs
    assert "\\x1b[2J\\x1b[H\\routcome ok" in logs  # the forged line is shown as text
    assert MARKUP in logs
    _check(cli_runner("logs", config_id, "--run", run_id))

    status = _check(cli_runner("status"), codes=(1,))
    assert "[bold red]CRITICAL" in status.replace("\n", "").replace(" ", "") or "CRITICAL" in status
    _check(cli_runner("doctor"), codes=(1,))

    for args in (("plugins", "list"), ("configs", "list"), ("runs",), ("status",)):
        result = cli_runner(*args, "--json")
        data = _strict_json(_check(result, codes=(0, 1)))
        assert data is not None
        assert SECRET not in result.stdout

    runs_json = _strict_json(cli_runner.ok("runs", "--json").stdout)
    assert runs_json[0]["duration_ms"] is None  # NaN in the database, null in JSON
    assert SECRET not in json.dumps(runs_json)


def test_hostile_arguments_are_one_line_errors(
    cli_runner: CliRunner, hostile_db: dict[str, int]
) -> None:
    config_id = hostile_db["config"]
    for args in (
        ("trigger", config_id, "task" + HOSTILE + MARKUP),
        ("configs", "set", config_id, f"k{HOSTILE}=v"),
        ("configs", "set", config_id, f"motto={HOSTILE}"),
        ("configs", "create", "no" + HOSTILE),
        ("plugins", "remove", "x" + HOSTILE + MARKUP),
        ("runs", "--task", HOSTILE, "--outcome", MARKUP),
        ("logs", "999999"),
        ("plugins", "install", "/nonexistent" + HOSTILE),
    ):
        result = cli_runner(*args)
        _check(result, codes=(0, 2))
        if result.returncode == 2:
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_run_report_escapes_and_masks(cli_runner: CliRunner, tmp_path: Path) -> None:
    directory = tmp_path / "loud"
    directory.mkdir()
    (directory / "plugin.json").write_text(
        json.dumps(
            {
                "name": "loud",
                "version": "1.0",
                "config_schema": {"token": {"type": "string", "secret": True}},
            }
        )
    )
    (directory / "main.py").write_text(
        "def run_every_minute(meta):\n"
        f"    print({HOSTILE + MARKUP!r})\n"
        "    meta.logger.info('token=' + meta.config['token'])\n"
        f"    return {{'n': 1.5, 'text': {HOSTILE!r}, "
        "'t': meta.config['token']}\n"
    )
    for secret in (SECRET, "t", '"'):  # a one-character secret must not corrupt the report
        text = cli_runner("run", directory, "--config", f"token={secret}", database_url=None)
        shown = _check(text)
        assert "\\x1b[2J" in shown and "[bold red]CRITICAL" in shown
        as_json = cli_runner(
            "run", directory, "--config", f"token={secret}", "--json", database_url=None
        )
        data = _strict_json(_check(as_json))
        assert data["outcome"] == "ok" and data["task"] == "run_every_minute"
        assert data["result"]["n"] == 1.5  # (a NaN result is refused by the sandbox itself)
        assert data["result"][Masker([secret]).text("t")] == "***"  # "t" masks keys too
        assert {"plugin", "version", "logs", "result", "error"} <= set(data)
        assert data["logs"][-1]["message"].endswith("=***")
        if len(secret) > 1:
            assert secret not in as_json.stdout and secret not in shown
