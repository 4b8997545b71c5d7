"""What a test session leaves running, found at its end (tests/conftest.py fails the session on
any, then kills them):

- a process below the test process (a `serve`, a CLI command, a fork server, a run...);
- a process carrying this session's mark in its environment ($PLUGIN_RUNTIME_TEST_SESSION, set
  when the session starts and inherited by everything it starts, even once re-parented);
- a process whose command line names one of the session's directories (its private PostgreSQL's
  data directory, pytest's temp directory: a postgres started by a test);
- an orphaned sandbox fork server of this checkout, started during the session (its environment
  is scrubbed, so it carries no mark: it is known by its command line and PYTHONPATH; one whose
  owner still runs belongs to that owner, perhaps another session of the same checkout).
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

MARK_ENV = "PLUGIN_RUNTIME_TEST_SESSION"
FORK_SERVER_MARK = "sandbox.forkserver"


@dataclass(frozen=True)
class Leftover:
    pid: int
    command: str
    why: str

    def line(self) -> str:
        return f"pid {self.pid} ({self.why}): {self.command[:160]}"


def fork_servers(repo_root: Path) -> set[int]:
    """Pids of the sandbox fork servers started from this checkout, running now."""
    found: set[int] = set()
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if FORK_SERVER_MARK not in cmdline:
            continue
        try:
            if proc.environ().get("PYTHONPATH") == str(repo_root):
                found.add(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _orphaned(proc: psutil.Process) -> bool:
    """Its parent is gone (re-parented to init or a subreaper that is not a Python process of
    this checkout's kind): a fork server whose owner is alive belongs to that owner, maybe
    another test session of the same checkout, and is not ours to judge."""
    try:
        parent = proc.parent()
        return parent is None or parent.pid == 1 or "python" not in parent.name().lower()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def find_leftovers(
    *,
    mark: str,
    directories: Iterable[Path],
    repo_root: Path,
    fork_servers_before: Collection[int] = (),
    started_at: float = 0.0,
) -> list[Leftover]:
    """The processes this session left running (see the module docstring); zombies (exited,
    not yet reaped) are not running and are not counted."""
    me = os.getpid()
    # A directory, not a prefix of another one (pytest-5 is not pytest-51).
    named = [re.compile(re.escape(str(d)) + r"(?=/|\s|$)") for d in directories]
    found: dict[int, Leftover] = {}

    def add(proc: psutil.Process, why: str) -> None:
        try:
            if proc.pid == me or proc.status() == psutil.STATUS_ZOMBIE:
                return
            command = " ".join(proc.cmdline()) or proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return
        found.setdefault(proc.pid, Leftover(proc.pid, command, why))

    for child in psutil.Process(me).children(recursive=True):
        add(child, "a child of the test session")
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if any(pattern.search(cmdline) for pattern in named):
            add(proc, "runs from a directory of the session")
            continue
        try:
            if proc.environ().get(MARK_ENV) == mark:
                add(proc, "started by the session")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    for pid in fork_servers(repo_root) - set(fork_servers_before):
        try:
            proc = psutil.Process(pid)
            if proc.create_time() >= started_at and _orphaned(proc):
                add(proc, "an orphaned fork server of this checkout")
        except psutil.NoSuchProcess:
            pass
    return sorted(found.values(), key=lambda leftover: leftover.pid)


def kill(leftovers: Iterable[Leftover]) -> None:
    """SIGKILL each leftover (a process already gone is fine)."""
    for leftover in leftovers:
        try:
            os.kill(leftover.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
