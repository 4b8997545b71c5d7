"""How the status-page test finds its Chromium (tests/browser.py)."""

from __future__ import annotations

import sys

import pytest
from browser import CHROMIUM_ENV, HOW_TO_GET_ONE, find_chromium


def test_the_environment_names_the_browser(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CHROMIUM_ENV, sys.executable)  # any executable file will do here
    assert find_chromium() == sys.executable


def test_a_named_browser_that_is_not_there_is_none_not_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CHROMIUM_ENV, "/nonexistent/chromium")
    assert find_chromium() is None
    assert "apt-get install chromium" in HOW_TO_GET_ONE and CHROMIUM_ENV in HOW_TO_GET_ONE
