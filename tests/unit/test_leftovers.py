"""The session-end check finds what a session leaves running (tests/leftovers.py): a child, a
re-parented grandchild carrying the session's mark, a process running from a session directory;
and not a process of someone else."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from leftovers import MARK_ENV, find_leftovers, kill

REPO_ROOT = Path(__file__).resolve().parents[2]
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def mark() -> str:
    return os.environ[MARK_ENV]


@pytest.fixture
def started() -> Iterator[list[int]]:
    """Pids a test started; killed at its end whatever the test found."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def _found(mark: str, directories: list[Path] | None = None) -> dict[int, str]:
    return {
        leftover.pid: leftover.why
        for leftover in find_leftovers(
            mark=mark, directories=directories or [], repo_root=REPO_ROOT
        )
    }


def _wait_started(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if psutil.pid_exists(pid) and "time.sleep" in " ".join(psutil.Process(pid).cmdline()):
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} did not start")


def test_a_child_is_a_leftover_until_it_is_gone(mark: str, started: list[int]) -> None:
    child = subprocess.Popen(SLEEP)
    started.append(child.pid)
    _wait_started(child.pid)
    assert _found(mark).get(child.pid) == "a child of the test session"
    kill(find_leftovers(mark=mark, directories=[], repo_root=REPO_ROOT))
    child.wait(10)
    assert child.pid not in _found(mark)


def test_a_reparented_grandchild_is_found_by_its_mark(mark: str, started: list[int]) -> None:
    # The middle process exits at once: the grandchild is no longer below the test process.
    middle = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import subprocess; print(subprocess.Popen({SLEEP!r}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(middle.stdout)
    started.append(pid)
    _wait_started(pid)
    assert pid not in [c.pid for c in psutil.Process().children(recursive=True)]
    assert _found(mark).get(pid) == "started by the session"
    assert pid not in _found("some-other-session")


def test_a_process_running_from_a_session_directory_is_found(
    tmp_path: Path, started: list[int]
) -> None:
    env = {k: v for k, v in os.environ.items() if k != MARK_ENV}
    directory = tmp_path / "data"
    middle = subprocess.run(
        [
            sys.executable,
            "-c",
            "import subprocess, sys; "
            f"print(subprocess.Popen({SLEEP!r} + [{str(directory)!r}], env={env!r}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    pid = int(middle.stdout)
    started.append(pid)
    _wait_started(pid)
    assert _found("no-mark", [directory]).get(pid) == "runs from a directory of the session"
    # A directory is matched whole: data1 is not data.
    assert pid not in _found("no-mark", [tmp_path / "dat"])
