"""The status page shows, not only tells: a config's page with a grid of its recent slots
coloured by outcome, each linking to the run's page (error, traceback, logs), and the front
page's charts (runs per minute by outcome, start lag per cadence). A real `serve --http` node
(fast clock), real PostgreSQL, real headless Chromium, and a screenshot the test looks at."""

from __future__ import annotations

import json
import os
import shutil
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import HOW_TO_GET_ONE, find_chromium
from png import dominant

from runtime.testing.fleet import Fleet

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]

FAILED_RED = (0xCF, 0x22, 0x2E)  # --s-failed of runtime/web/page.css
OK_GREEN = (0x2D, 0xA4, 0x4E)  # --s-ok
# Set to a directory to keep the screenshots (e.g. to look at them); tmp_path otherwise.
SCREENSHOTS_ENV = "PLUGIN_RUNTIME_SCREENSHOTS"


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    if executable is None:
        pytest.fail(HOW_TO_GET_ONE, pytrace=False)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as res:
            return res.status, res.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _keep(page: Any, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    if os.environ.get(SCREENSHOTS_ENV):
        shutil.copy(tmp_path / name, Path(os.environ[SCREENSHOTS_ENV]) / name)


def _close(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    return all(abs(x - y) <= 8 for x, y in zip(a, b, strict=True))


def test_config_page_grid_run_page_and_charts(
    database_url: str, test_plugins_dir: Path, tmp_path: Path, browser: Any
) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    fleet = Fleet(
        database_url,
        tmp_path / "fleet",
        time_scale=60,
        tick_interval=10,
        concurrency=4,
        extra_args=["--http", f"127.0.0.1:{port}"],
    )
    with fleet:
        fleet.install(test_plugins_dir / "always_fails")
        fleet.install(test_plugins_dir / "tiny")
        [bad] = fleet.create_configs("always_fails", 1)
        [good] = fleet.create_configs("tiny", 1, {"api_key": "k"})
        fleet.start_nodes(1)
        fleet.wait_for(lambda: len(fleet.runs("outcome = 'error'")) >= 3, 60, "3 failures")
        fleet.wait_for(lambda: len(fleet.runs("outcome = 'ok'")) >= 3, 60, "3 successes")
        fleet.wait_for(lambda: _request(base + "/readyz")[0] == 200, 20, "/readyz")
        failed_run = fleet.runs("outcome = 'error'")[0]

        code, body = _request(f"{base}/api/configs/{bad}")
        assert code == 200, body
        data = json.loads(body)
        [grid] = data["grids"]
        assert grid["task"] == "run_every_minute" and grid["counts"]["failed"] >= 3
        assert _request(f"{base}/api/configs/999999")[0] == 404
        assert _request(f"{base}/api/runs/999999")[0] == 404

        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(f"{base}/configs/{bad}")
        slot = page.locator(f".grid a.slot.failed[data-run='{failed_run['id']}']")
        slot.wait_for(timeout=15000)
        assert "ValueError: upstream said 503" in (slot.get_attribute("title") or "")
        assert "always_fails" in page.locator("#title").inner_text()
        # Look at it: the known failing slot is drawn red.
        shot = slot.screenshot()
        assert _close(dominant(shot), FAILED_RED), dominant(shot)
        _keep(page, tmp_path, "config.png")

        # The slot links to the run's page: error, traceback, logs.
        slot.click()
        page.wait_for_url(f"{base}/runs/{failed_run['id']}")
        page.locator("#error-summary").wait_for(timeout=10000)
        assert page.locator("#error-summary").inner_text() == "ValueError: upstream said 503"
        assert 'raise ValueError("upstream said 503' in page.locator("#traceback").inner_text()
        assert "fetching page 1" in page.locator("#log-lines").inner_text()
        assert "error" in page.locator("#outcome").inner_text()
        _keep(page, tmp_path, "run.png")

        page.goto(f"{base}/configs/{good}")
        ok_slot = page.locator(".grid a.slot.ok").first
        ok_slot.wait_for(timeout=15000)
        assert _close(dominant(ok_slot.screenshot()), OK_GREEN)

        # Front page: charts, links to the config page and to the failed run.
        page.goto(base + "/")
        page.locator("#runs-chart svg rect[data-outcome='failed']").first.wait_for(timeout=15000)
        assert page.locator("#runs-chart svg rect[data-outcome='ok']").count() > 0
        page.locator("#lag-chart svg path[data-cadence='minute']").wait_for(timeout=15000)
        page.locator(f"#quarantined a[href='/configs/{bad}']").wait_for(timeout=15000)
        look = page.locator("#problems a.look").first
        assert look.get_attribute("href", timeout=5000).startswith("/runs/")  # type: ignore[union-attr]
        _keep(page, tmp_path, "front.png")
        page.close()
