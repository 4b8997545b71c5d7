"""The headless Chromium that the status-page test drives (through Playwright), and how
`make test` gets one on a machine that has none.

Found, in order: $PLUGIN_RUNTIME_TEST_CHROMIUM; a system Chromium on PATH (Debian's `chromium`,
`chromium-browser`, `google-chrome`); Playwright's own build (`python -m playwright install
chromium`, in ~/.cache/ms-playwright). `python tests/browser.py` — run by `make test` before the
suite — prints the one it found, or installs Playwright's when there is none; if that fails too
(no network), it says so and the status-page test fails with the reason (it does not skip).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

CHROMIUM_ENV = "PLUGIN_RUNTIME_TEST_CHROMIUM"
SYSTEM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
HOW_TO_GET_ONE = (
    "no Chromium for the status-page test: install one (Debian: apt-get install chromium; "
    "or: .venv/bin/python -m playwright install chromium), or set "
    f"${CHROMIUM_ENV} to its executable"
)


def _executable(path: str | None) -> str | None:
    return path if path and os.path.isfile(path) and os.access(path, os.X_OK) else None


def _playwright_chromium() -> str | None:
    """Playwright's own Chromium, if it has been downloaded."""
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            return _executable(pw.chromium.executable_path)
    except Exception:  # no playwright driver, or it cannot start: no browser from it
        return None


def find_chromium() -> str | None:
    """The Chromium executable to drive, or None when this machine has none."""
    from_env = os.environ.get(CHROMIUM_ENV)
    if from_env:
        return _executable(from_env)
    for name in SYSTEM_NAMES:
        found = _executable(shutil.which(name))
        if found:
            return found
    return _playwright_chromium()


def main() -> int:
    found = find_chromium()
    if found is None:
        print("no Chromium found: installing Playwright's (python -m playwright install chromium)")
        subprocess.run([sys.executable, "-m", "playwright", "install", "chromium"], check=False)
        found = find_chromium()
    print(f"status-page test browser: {found}" if found else f"warning: {HOW_TO_GET_ONE}")
    return 0  # a missing browser fails its one test, not the whole `make test` before it starts


if __name__ == "__main__":
    sys.exit(main())
