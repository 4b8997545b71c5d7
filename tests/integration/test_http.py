"""The node's HTTP port on a real `serve --http` process: probes, Prometheus metrics after real
runs, the status JSON, admin actions, and the status page in a real headless Chromium."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from browser import HOW_TO_GET_ONE, find_chromium
from promql import Exported, problems, runbook_queries

from runtime.testing.fleet import Fleet

if TYPE_CHECKING:
    from conftest import CliRunner

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
TOKEN = "s3cret-admin-token"
REPO_ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, str]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, res.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _metric(text: str, name: str, labels: str = "") -> float | None:
    pattern = re.escape(name + ("{" + labels + "}" if labels else "")) + r" (\S+)"
    match = re.search(r"^" + pattern + "$", text, re.M)
    return float(match.group(1)) if match else None


def _fleet(database_url: str, tmp_path: Path, port: int) -> Fleet:
    return Fleet(
        database_url,
        tmp_path / "fleet",
        time_scale=60,
        tick_interval=10,
        concurrency=4,
        extra_args=["--http", f"127.0.0.1:{port}"],
    )


def test_probes_metrics_and_status_json(
    database_url: str, test_plugins_dir: Path, tmp_path: Path
) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with _fleet(database_url, tmp_path, port) as fleet:
        fleet.install(test_plugins_dir / "tiny")
        fleet.create_configs("tiny", 2, {"api_key": "k"})
        fleet.start_nodes(1)
        fleet.wait_for(lambda: _request(base + "/healthz")[0] == 200, 20, "/healthz")
        fleet.wait_for(lambda: _request(base + "/readyz")[0] == 200, 20, "/readyz")
        fleet.wait_for(lambda: len(fleet.runs("outcome = 'ok'")) >= 4, 30, "runs")

        def counted() -> str | None:
            text = _request(base + "/metrics")[1]
            ok = _metric(text, "plugin_runtime_runs_total", 'cadence="minute",outcome="ok"')
            return text if ok and ok >= 3 else None

        text = fleet.wait_for(counted, 20, "runs in /metrics")
        assert _metric(text, "plugin_runtime_start_lag_seconds_count", 'cadence="minute"')
        assert _metric(
            text, "plugin_runtime_start_lag_seconds_bucket", 'cadence="minute",le="+Inf"'
        )
        assert _metric(text, "plugin_runtime_run_duration_seconds_count", 'cadence="minute"')
        assert _metric(text, "plugin_runtime_database_up") == 1.0
        assert _metric(text, "plugin_runtime_quarantined_configs") == 0.0
        assert "# TYPE plugin_runtime_runs_total counter" in text

        code, body = _request(base + "/api/status")
        assert code == 200
        status = json.loads(body)
        assert status["healthy"] is True and status["admin"] is False
        assert status["node"] == "node-1" and status["nodes"][0]["state"] == "alive"
        assert any(c["cadence"] == "minute" and c["runs"] >= 3 for c in status["cadences"])

        page_code, page = _request(base + "/")
        assert page_code == 200 and "<title>plugin-runtime status</title>" in page
        # Read-only without an admin token: actions are refused.
        assert _request(base + "/api/configs/1/disable", "POST")[0] == 403
        assert (
            _request(base + "/api/configs/1/disable", "POST", {"Authorization": f"Bearer {TOKEN}"})[
                0
            ]
            == 403
        )
        assert _request(base + "/nope")[0] == 404
        assert fleet.query("SELECT enabled FROM plugin_runtime.plugin_configs WHERE id = 1") == [
            {"enabled": True}
        ]


def test_every_promql_example_of_the_runbook_is_what_a_node_exports(
    database_url: str, test_plugins_dir: Path, tmp_path: Path
) -> None:
    """docs/runbook.md's PromQL, line by line, against a real node's /metrics after real runs
    (ok and failed, two plugins) and a refresh of the configs gauges."""
    queries = runbook_queries((REPO_ROOT / "docs" / "runbook.md").read_text(encoding="utf-8"))
    assert len(queries) >= 10
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with _fleet(database_url, tmp_path, port) as fleet:
        fleet.install(test_plugins_dir / "tiny")
        fleet.install(test_plugins_dir / "always_fails")
        fleet.create_configs("tiny", 2, {"api_key": "k"})
        fleet.create_configs("always_fails", 1)
        fleet.create_configs("always_fails", 1, enabled=False)
        fleet.start_nodes(1)

        def scraped() -> str | None:
            text = _request(base + "/metrics")[1]
            wanted = [
                ("plugin_runtime_plugin_runs_total", 'cadence="minute",outcome="ok",plugin="tiny"'),
                (
                    "plugin_runtime_plugin_runs_total",
                    'cadence="minute",outcome="error",plugin="always_fails"',
                ),
                ("plugin_runtime_plugin_start_lag_seconds_count", 'cadence="minute",plugin="tiny"'),
                ("plugin_runtime_plugin_configs", 'plugin="always_fails",state="disabled"'),
            ]
            return text if all(_metric(text, *w) for w in wanted) else None

        text = fleet.wait_for(scraped, 40, "per-plugin metrics in /metrics")
    assert _metric(text, "plugin_runtime_plugin_configs", 'plugin="tiny",state="enabled"') == 2
    assert _metric(text, "plugin_runtime_plugin_configs", 'plugin="tiny",state="quarantined"') == 0
    assert _metric(text, "plugin_runtime_plugin_labels") == 2
    assert "config" not in {k for labels in Exported.parse(text).labels.values() for k in labels}
    exported = Exported.parse(text)
    found = {query: problems(query, exported) for query in queries}
    assert {q: p for q, p in found.items() if p} == {}


def test_readyz_is_503_while_the_database_is_unreachable(cli_runner: CliRunner) -> None:
    port = _free_port()
    closed = f"postgresql://postgres@127.0.0.1:{_free_port()}/postgres"
    proc = cli_runner.start(
        "serve", "--http", f"127.0.0.1:{port}", "--log-format", "json", database_url=closed
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            if _request(base + "/healthz")[0] == 200:
                break
            proc.poll()
            assert proc.returncode is None, proc.communicate()
            time.sleep(0.2)
        assert _request(base + "/healthz")[0] == 200
        code, body = _request(base + "/readyz")
        assert code == 503 and json.loads(body) == {
            "ready": False,
            "database": False,
            "ticked": False,
        }
        code, body = _request(base + "/api/status")
        assert code == 200 and json.loads(body)["database"]["reachable"] is False
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.fixture
def browser() -> Iterator[Callable[[], Any]]:
    """Opens a headless Chromium (found as tests/browser.py says) when the test calls it; on a
    machine without one the test fails, saying how to get one."""
    from playwright.sync_api import sync_playwright

    with ExitStack() as stack:

        def open_browser() -> Any:
            executable = find_chromium()
            if executable is None:
                pytest.fail(HOW_TO_GET_ONE, pytrace=False)
            pw = stack.enter_context(sync_playwright())
            opened = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            stack.callback(opened.close)
            return opened

        yield open_browser


def test_status_page_shows_a_failing_config_and_disables_it(
    database_url: str,
    test_plugins_dir: Path,
    tmp_path: Path,
    browser: Callable[[], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PLUGIN_RUNTIME_ADMIN_TOKEN", TOKEN)  # the node inherits it
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with _fleet(database_url, tmp_path, port) as fleet:
        fleet.install(test_plugins_dir / "always_timeout")
        fleet.install(test_plugins_dir / "tiny")
        [bad] = fleet.create_configs("always_timeout", 1)
        [good] = fleet.create_configs("tiny", 1, {"api_key": "k"})
        fleet.start_nodes(1)
        fleet.wait_for(
            lambda: fleet.query(
                "SELECT 1 FROM plugin_runtime.plugin_configs WHERE id = %s "
                "AND consecutive_failures >= 3",
                (bad,),
            ),
            40,
            "three timeouts",
        )
        fleet.wait_for(lambda: _request(base + "/readyz")[0] == 200, 20, "/readyz")
        # Without the token (or with a wrong one) the admin endpoints refuse.
        assert _request(f"{base}/api/configs/{bad}/disable", "POST")[0] == 401
        assert (
            _request(
                f"{base}/api/configs/{bad}/disable", "POST", {"Authorization": "Bearer wrong"}
            )[0]
            == 401
        )

        page = browser().new_page(viewport={"width": 390, "height": 844})  # a phone
        page.goto(base + "/")
        row = page.locator(f"#worst tr[data-config='{bad}']")
        row.wait_for(timeout=15000)
        assert "always_timeout" in row.inner_text() and "timeout" in row.inner_text()
        page.locator("#nodes tr[data-node='node-1']").wait_for(timeout=5000)
        assert "alive" in page.locator("#nodes").inner_text()
        problems = page.locator("#problems").inner_text()
        assert f"plugin-runtime configs disable {bad}" in problems
        assert "problem" in page.locator("#overall").inner_text()
        # Readable on a phone: nothing wider than the screen but the scrolling tables.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        assert page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)") >= 16

        page.fill("#token", TOKEN)
        row.locator("button[data-action='disable']").click()
        fleet.wait_for(
            lambda: fleet.query(
                "SELECT 1 FROM plugin_runtime.plugin_configs WHERE id = %s AND NOT enabled", (bad,)
            ),
            10,
            "the config to be disabled by the page",
        )
        page.locator("#flash").filter(has_text=f"config {bad} disabled").wait_for(timeout=5000)
        page.locator(f"#worst tr[data-config='{bad}'] button[data-action='enable']").wait_for(
            timeout=15000
        )
        assert fleet.query(
            "SELECT enabled FROM plugin_runtime.plugin_configs WHERE id = %s", (good,)
        ) == [{"enabled": True}]
        page.close()
