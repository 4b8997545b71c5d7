"""`plugins install` against hostile plugin directories, and replacing an installed plugin:
schedules that never fire, files that are not regular files inside the directory, oversized and
deeply nested JSON, replacing code without --upgrade, and secrets across versions."""

from __future__ import annotations

import json
import os
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import schedule
from sandbox.manifest import (
    MAX_MANIFEST_BYTES,
    MAX_SOURCE_BYTES,
    ManifestError,
    load_plugin,
    validate_cron,
)

if TYPE_CHECKING:
    from conftest import CliRunner

MAIN = "def run_every_minute(meta):\n    return 1\n\ndef sync(meta):\n    return 2\n"


def _plugin(tmp_path: Path, manifest: dict[str, Any], main: str = MAIN, name: str = "p") -> Path:
    directory = tmp_path / name
    directory.mkdir(exist_ok=True)
    (directory / "plugin.json").write_text(json.dumps(manifest))
    (directory / "main.py").write_text(main)
    return directory


@pytest.mark.parametrize("expression", ["0 0 31 2 *", "0 0 30 2 *", "0 0 1 1 1#5"])
def test_a_schedule_that_never_fires_is_refused_with_its_field(
    tmp_path: Path, expression: str
) -> None:
    directory = _plugin(tmp_path, {"name": "never", "schedules": {"sync": expression}})
    with pytest.raises(ManifestError) as info:
        load_plugin(directory)
    assert "field 'schedules.sync'" in str(info.value)
    assert "has no slot within 10 years" in str(info.value)


@pytest.mark.parametrize("expression", ["0 0 29 2 *", "0 0 L 2 *", "*/7 3 13 * 5", "0 12 * * 1#5"])
def test_rare_but_real_schedules_install(tmp_path: Path, expression: str) -> None:
    directory = _plugin(tmp_path, {"name": "rare", "schedules": {"sync": expression}})
    assert load_plugin(directory).tasks()["sync"].cron == expression


def test_the_horizon_is_checked_both_ways() -> None:
    # Feb 29th seen from just after one: the next is 4 years on, the previous just behind.
    assert validate_cron("0 0 29 2 *", "s", now=datetime(2096, 3, 1, tzinfo=UTC))
    with pytest.raises(ManifestError, match="field 's'"):
        validate_cron("0 0 31 4 *", "s")  # April has 30 days


def test_symlinks_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("root:x:0:0")
    directory = _plugin(tmp_path, {"name": "links"})
    (directory / "main.py").unlink()
    (directory / "main.py").symlink_to(secret)
    with pytest.raises(ManifestError, match="symbolic link"):
        load_plugin(directory)
    # plugin.json as a link, even to a valid manifest inside the directory
    (directory / "main.py").unlink()
    (directory / "main.py").write_text(MAIN)
    (directory / "real.json").write_text(json.dumps({"name": "links"}))
    (directory / "plugin.json").unlink()
    (directory / "plugin.json").symlink_to(directory / "real.json")
    with pytest.raises(ManifestError, match="plugin.json: is a symbolic link"):
        load_plugin(directory)


def test_fifos_devices_and_directories_are_refused_without_blocking(tmp_path: Path) -> None:
    directory = _plugin(tmp_path, {"name": "special"})
    (directory / "main.py").unlink()
    os.mkfifo(directory / "main.py")  # opening a FIFO for reading would block for ever
    outcome: list[BaseException] = []
    reader = threading.Thread(
        target=lambda: outcome.append(pytest.raises(ManifestError, load_plugin, directory).value)
    )
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "install blocked on a FIFO"
    assert "not a regular file" in str(outcome[0])
    (directory / "main.py").unlink()
    (directory / "main.py").mkdir()
    with pytest.raises(ManifestError, match="not a regular file"):
        load_plugin(directory)
    if os.geteuid() == 0:  # a device node needs root to create
        (directory / "main.py").rmdir()
        os.mknod(directory / "main.py", 0o600 | 0o020000, os.makedev(1, 5))  # /dev/zero
        with pytest.raises(ManifestError, match="not a regular file"):
            load_plugin(directory)


def test_every_file_is_size_capped(tmp_path: Path) -> None:
    directory = _plugin(tmp_path, {"name": "big", "description": "x"})
    (directory / "plugin.json").write_text(
        json.dumps({"name": "big", "version": "1", "x": " " * MAX_MANIFEST_BYTES})
    )
    with pytest.raises(ManifestError, match=f"plugin.json: larger than {MAX_MANIFEST_BYTES}"):
        load_plugin(directory)
    _plugin(tmp_path, {"name": "big"}, main="#" * (MAX_SOURCE_BYTES + 1), name="p")
    with pytest.raises(ManifestError, match=f"larger than {MAX_SOURCE_BYTES}"):
        load_plugin(directory)


def test_deep_json_is_one_line_error(cli_runner: CliRunner, tmp_path: Path) -> None:
    directory = tmp_path / "deep"
    directory.mkdir()
    (directory / "plugin.json").write_text(
        '{"name": "deep", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    )
    (directory / "main.py").write_text(MAIN)
    result = cli_runner("plugins", "install", directory)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: invalid plugin: plugin.json: JSON nested deeper than 64 levels"
    ]


def test_deep_json_setting_is_one_line_error(cli_runner: CliRunner, test_plugins_dir: Path) -> None:
    cli_runner.ok("plugins", "install", test_plugins_dir / "tiny")
    deep = "[" * 30_000 + "]" * 30_000  # a command-line argument is at most 128 KiB
    result = cli_runner("configs", "create", "tiny", "-c", "api_key=k", "-c", f"extra={deep}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: setting 'extra': JSON nested deeper than 64 levels"
    ]
    ok = cli_runner("configs", "create", "tiny", "-c", "api_key=k", "-c", 'extra={"a": [1, [2]]}')
    assert ok.returncode == 0, ok.stderr


def _manifest(version: str, secret: bool) -> dict[str, Any]:
    return {
        "name": "vault",
        "version": version,
        "config_schema": {"token": {"type": "string", "secret": secret}, "region": {}},
    }


def test_replacing_a_plugin_needs_upgrade_and_says_what_changes(
    cli_runner: CliRunner, tmp_path: Path
) -> None:
    v1 = _plugin(tmp_path, _manifest("1.0.0", True), name="v1")
    cli_runner.ok("plugins", "install", v1)
    assert "unchanged" in cli_runner.ok("plugins", "install", v1).stdout  # same code: no-op
    config_id = cli_runner.ok("configs", "create", "vault", "-c", "token=hunter2").stdout.split()[
        -1
    ]

    evil = _plugin(tmp_path, _manifest("6.6.6", True), main=MAIN + "\n# other code\n", name="other")
    refused = cli_runner("plugins", "install", evil)
    assert refused.returncode == 2
    message = refused.stderr.strip()
    assert message.startswith("error: plugin 'vault' is already installed")
    assert "1.0.0 (sha256:" in message and "6.6.6 (sha256:" in message
    assert f"1 config(s) (id {config_id})" in message and "--upgrade" in message
    assert "6.6.6" not in cli_runner.ok("plugins", "list", "--json").stdout  # nothing changed

    upgraded = cli_runner.ok("plugins", "install", evil, "--upgrade").stdout
    assert "upgraded plugin vault 1.0.0 -> 6.6.6" in upgraded
    assert f"configs affected: 1 (id {config_id})" in upgraded
    assert upgraded.count("sha256:") == 2


def test_a_secret_stays_secret_when_a_new_version_says_otherwise(
    cli_runner: CliRunner, tmp_path: Path
) -> None:
    cli_runner.ok("plugins", "install", _plugin(tmp_path, _manifest("1", True), name="v1"))
    cli_runner.ok("configs", "create", "vault", "-c", "token=hunter2", "-c", "region=eu")

    leaky = _plugin(tmp_path, _manifest("2", False), name="v2")
    result = cli_runner.ok("plugins", "install", leaky, "--upgrade")
    assert "still masked as secret" in result.stderr and "token" in result.stderr
    for listing in (
        cli_runner.ok("configs", "list").stdout,
        cli_runner.ok("configs", "list", "--json").stdout,
    ):
        assert "hunter2" not in listing and "***" in listing and "eu" in listing
    # A third version that still says "not secret" keeps it masked too.
    cli_runner.ok(
        "plugins", "install", _plugin(tmp_path, _manifest("3", False), name="v3"), "--upgrade"
    )
    assert "hunter2" not in cli_runner.ok("configs", "list", "--json").stdout

    # The operator says otherwise.
    cli_runner.ok("plugins", "install", leaky, "--upgrade", "--reveal", "token")
    assert "hunter2" in cli_runner.ok("configs", "list", "--json").stdout


def test_a_setting_the_new_version_drops_is_masked(cli_runner: CliRunner, tmp_path: Path) -> None:
    cli_runner.ok("plugins", "install", _plugin(tmp_path, _manifest("1", True), name="v1"))
    cli_runner.ok("configs", "create", "vault", "-c", "token=hunter2")
    dropped = {"name": "vault", "version": "2", "config_schema": {"region": {}}}
    cli_runner.ok("plugins", "install", _plugin(tmp_path, dropped, name="v2"), "--upgrade")
    listing = json.loads(cli_runner.ok("configs", "list", "--json").stdout)
    assert listing[0]["settings"]["token"] == "***"


def test_install_copies_nothing_it_did_not_check(tmp_path: Path) -> None:
    """The directory may be moved under install's feet: what is read is what was opened."""
    directory = _plugin(tmp_path, {"name": "moving"})
    plugin = load_plugin(directory)
    shutil.rmtree(directory)
    assert plugin.source == MAIN


_FIELD = {
    "minute": st.sampled_from(["*", "0", "59", "*/7", "5-10", "1,31,59", "60"]),
    "hour": st.sampled_from(["*", "0", "23", "*/5", "22-23", "24"]),
    "day": st.sampled_from(["*", "1", "28", "29", "30", "31", "L", "*/10", "15-31", "0", "32"]),
    "month": st.sampled_from(["*", "1", "2", "4", "2,4", "*/6", "11-12", "13"]),
    "weekday": st.sampled_from(["*", "0", "1", "6", "7", "1#5", "5#1", "1-5", "sun", "1#6", "5L"]),
}


@settings(max_examples=300, deadline=None)
@given(
    st.tuples(*_FIELD.values()),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2300, 1, 1)),
)
def test_whatever_install_accepts_the_scheduler_can_place(
    fields: tuple[str, ...], now: datetime
) -> None:
    """The install check and the scheduler agree: an expression validate_cron accepts always
    has a slot at or before, at or after and after any time the scheduler may ask about."""
    expression = " ".join(fields)
    when = now.replace(tzinfo=UTC)
    try:
        validate_cron(expression, "schedules.f", now=when)
    except ManifestError as exc:
        assert "field 'schedules.f'" in str(exc)
        return
    previous = schedule.slot_at_or_before(expression, when)
    following = schedule.first_slot_at_or_after(expression, when)
    assert previous <= when <= following
    assert schedule.slot_after(expression, following) > following
