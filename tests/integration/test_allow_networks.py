"""`--allow-networks CIDR,...`: meta.fetch reaches the listed non-public networks and no other;
loopback only when listed. In `serve` (a real node, a real local API), in `run`, in the pytest
kit, and in HttpFetcher itself."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from items_api import items_api

from runtime.testing.fleet import Fleet
from runtime.testing.pytest_plugin import PluginRunner
from sandbox import RunInfo, RunRequest, load_plugin
from sandbox.services import FetchRefused, HttpFetcher, is_reachable, parse_networks

if TYPE_CHECKING:
    from conftest import CliRunner

IMPORTER = Path(__file__).parents[2] / "examples" / "hourly_importer"


def _request() -> RunRequest:
    plugin = load_plugin(IMPORTER)
    return RunRequest(plugin=plugin, task="run_every_hour", config={}, run=RunInfo())


def test_fetcher_reaches_listed_networks_only() -> None:
    """The operator's list opens those networks and no other; loopback only when listed."""
    ten = HttpFetcher(allow_networks=parse_networks("10.0.0.0/8, 192.168.1.5"))
    for address, reachable in [
        ("10.20.30.40", True),
        ("192.168.1.5", True),
        ("192.168.1.6", False),
        ("127.0.0.1", False),
        ("::1", False),
        ("169.254.169.254", False),
        ("8.8.8.8", True),
    ]:
        assert is_reachable(ipaddress.ip_address(address), ten.allow_networks) is reachable
    with pytest.raises(FetchRefused, match="private or local addresses"):
        ten.check(_request(), "http://127.0.0.1:9/items")
    loop = HttpFetcher(allow_networks=parse_networks("127.0.0.0/8"))
    _, address, _port = loop.check(_request(), "http://127.0.0.1:9/items")
    assert address == "127.0.0.1"


def test_kit_allow_networks(plugin_runner: PluginRunner) -> None:
    with items_api() as api:
        config = {"base_url": api.base_url, "api_key": "k"}
        refused = plugin_runner.run(IMPORTER, config=config, allow_networks="10.0.0.0/8")
        assert refused.outcome == "error" and refused.error is not None
        assert refused.error.type == "FetchError" and api.requests == []
        ok = plugin_runner.run(IMPORTER, config=config, allow_networks="127.0.0.1")
        assert ok.outcome == "ok", ok.error
        assert len(api.requests) == 1


def test_run_allow_networks(cli_runner: CliRunner) -> None:
    with items_api() as api:
        args = ["run", IMPORTER, "--config", f"base_url={api.base_url}", "--config", "api_key=k"]
        refused = cli_runner(*args, "--json", "--allow-networks", "10.0.0.0/8", database_url=None)
        assert refused.returncode == 1
        assert json.loads(refused.stdout)["error"]["type"] == "FetchError"
        ok = cli_runner(*args, "--json", "--allow-networks", "127.0.0.0/8", database_url=None)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        bad = cli_runner(*args, "--allow-networks", "nope", database_url=None)
        assert bad.returncode == 2 and "--allow-networks: 'nope'" in bad.stderr


def _serve_one_run(
    database_url: str, cli: CliRunner, tmp_path: Path, base_url: str, *serve_args: str
) -> dict[str, object]:
    fleet = Fleet(database_url, tmp_path / "fleet", tick_interval=1, extra_args=serve_args)
    with fleet:
        fleet.install(IMPORTER)
        with fleet.conn() as conn:
            conn.execute("DELETE FROM plugin_runtime.plugin_configs")
        [config] = fleet.create_configs(
            "hourly_importer", 1, {"base_url": base_url, "api_key": "k"}, enabled=False
        )
        fleet.start_nodes(1)
        fleet.wait_ready()
        run_id = int(cli.ok("trigger", config, "run_every_hour").stdout.split()[-1])
        fleet.wait_for(lambda: fleet.runs("id = %s AND state = 'done'", (run_id,)), 30, "the run")
        return fleet.runs("id = %s", (run_id,))[0]


def test_serve_allow_networks(database_url: str, cli_runner: CliRunner, tmp_path: Path) -> None:
    with items_api() as api:
        refused = _serve_one_run(database_url, cli_runner, tmp_path / "a", api.base_url)
        assert refused["outcome"] == "error" and api.requests == []
        assert "private or local" in str(refused["error"])
        other = _serve_one_run(
            database_url, cli_runner, tmp_path / "b", api.base_url, "--allow-networks", "10.0.0.0/8"
        )
        assert other["outcome"] == "error" and api.requests == []
        ok = _serve_one_run(
            database_url,
            cli_runner,
            tmp_path / "c",
            api.base_url,
            "--allow-networks",
            "127.0.0.0/8",
        )
        assert ok["outcome"] == "ok", ok["error"]
        assert len(api.requests) == 1
