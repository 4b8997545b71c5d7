"""Every plugin of examples/faulty/ ends in its own outcome, within its limit plus a small grace,
in a real jailed child; the supervisor side survives; no process of a run outlives it."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from sandbox import RunReport, RunRequest, Sandbox, load_plugin, resolve_limits
from sandbox.jail import UID_BASE

FAULTY = Path(__file__).resolve().parents[2] / "examples" / "faulty"
EXAMPLES = FAULTY.parent
GRACE_S = 1.0  # beyond the limit that should stop the run
QUICK_S = 2.0  # runs stopped by a guard, not a clock limit


@dataclass(frozen=True)
class Expected:
    outcome: str
    within_s: str | float  # a number, or the name of the plugin limit that bounds the run
    check: Callable[[RunReport], None] = lambda outcome: None


def _error_type(kind: str, *, in_message: str = "") -> Callable[[RunReport], None]:
    def check(outcome: RunReport) -> None:
        assert outcome.error is not None
        assert outcome.error.type == kind, outcome.error
        assert in_message in outcome.error.message

    return check


def _plugin_traceback(outcome: RunReport) -> None:
    assert outcome.error is not None and outcome.error.type == "ValueError"
    assert outcome.error.traceback == [
        'File "main.py", line 8, in run_every_minute: return parse_amount("twelve")',
        'File "main.py", line 2, in parse_amount: return int(text)',
    ]
    assert [line.message for line in outcome.logs] == ["parsing the amount"]
    assert outcome.storage_writes == {}  # the write before the exception is dropped


def _recursion(outcome: RunReport) -> None:
    assert outcome.error is not None and outcome.error.type == "RecursionError"
    assert outcome.error.traceback, "the plugin's own frames are reported"
    assert all("line 2, in down" in line for line in outcome.error.traceback)


def _flood(outcome: RunReport) -> None:
    assert outcome.error is not None and outcome.error.type == "OutputLimit"
    assert 0 < len(outcome.logs) <= 1000


def _loop(outcome: RunReport) -> None:
    assert outcome.error is not None and outcome.error.type == "Timeout"
    assert [line.message for line in outcome.logs] == ["about to loop forever"]


# plugin -> expected outcome, the bound on its wall time, and what else must hold.
EXPECTED: dict[str, Expected] = {
    "infinite_loop": Expected("timeout", "timeout_s", _loop),
    "cpu_in_c": Expected("cpu_limit", "cpu_s", _error_type("CpuLimit")),
    "memory_bomb": Expected("memory_limit", QUICK_S, _error_type("MemoryLimit")),
    "output_flood": Expected("output_limit", QUICK_S, _flood),
    "deep_recursion": Expected("error", QUICK_S, _recursion),
    "exception": Expected("error", QUICK_S, _plugin_traceback),
    "forbidden_import": Expected(
        "bad_plugin", QUICK_S, _error_type("PluginCodeError", in_message="line 2: import of 'os'")
    ),
    "attribute_walk": Expected(
        "bad_plugin", QUICK_S, _error_type("PluginCodeError", in_message="line 4")
    ),
    "attribute_walk_format": Expected(
        "error", QUICK_S, _error_type("SecurityError", in_message="str.format")
    ),
    "import_hang": Expected("timeout", "timeout_s", _error_type("Timeout")),
}


@dataclass
class Watcher:
    """Polls the fork server's descendants while a run is in flight: what the run spawned."""

    fork_server: psutil.Process
    pids: set[int] = field(default_factory=set)
    pgids: set[int] = field(default_factory=set)
    uids: set[int] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    server_pgid: int = -1

    def __enter__(self) -> Watcher:
        self.server_pgid = os.getpgid(self.fork_server.pid)
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(5)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                children = self.fork_server.children(recursive=True)
            except psutil.Error:
                return
            for child in children:
                try:
                    pgid = os.getpgid(child.pid)
                    # Until it calls setpgid() a fresh child is still in the fork server's group
                    # (which is the test runner's): only the run's own group counts.
                    if pgid != self.server_pgid:
                        self.pgids.add(pgid)
                    self.uids.add(child.uids().real)
                    self.pids.add(child.pid)
                except (psutil.Error, ProcessLookupError):
                    pass
            time.sleep(0.005)


def leftovers(watcher: Watcher, started_at: float) -> list[str]:
    """Processes of the run still alive: the fork server's descendants, anything in a process
    group the run had, and any sandbox-uid process of the run's uids created since it began."""
    found = []
    for child in watcher.fork_server.children(recursive=True):
        found.append(f"fork server child {child.pid}")
    for proc in psutil.process_iter(["pid", "uids", "create_time", "status"]):
        try:
            if (
                proc.info["status"] == psutil.STATUS_ZOMBIE
                and proc.ppid() != watcher.fork_server.pid
            ):
                continue
            pgid = os.getpgid(proc.pid)
            uid = proc.info["uids"].real
        except (psutil.Error, ProcessLookupError):
            continue
        if pgid in watcher.pgids:
            found.append(f"pid {proc.pid} in the run's process group {pgid}")
        elif (
            uid >= UID_BASE
            and uid in watcher.uids
            and proc.info["create_time"] >= started_at - 0.05
        ):
            found.append(f"pid {proc.pid} with sandbox uid {uid}")
    return found


def wait_no_leftovers(watcher: Watcher, started_at: float, settle_s: float = 1.0) -> list[str]:
    deadline = time.monotonic() + settle_s
    while True:
        found = leftovers(watcher, started_at)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_faulty_plugin_gets_its_outcome_and_leaves_nothing(sandbox: Sandbox, name: str) -> None:
    expected = EXPECTED[name]
    assert (FAULTY / name / "README.md").read_text().count(f"`{expected.outcome}`") >= 1, (
        "the README states the expected outcome"
    )
    plugin = load_plugin(FAULTY / name)
    limits = resolve_limits(plugin.manifest.limits)
    bound = (
        float(getattr(limits, expected.within_s))
        if isinstance(expected.within_s, str)
        else expected.within_s
    )
    if name == "cpu_in_c":
        assert limits.cpu_s is not None and limits.timeout_s is not None
        assert limits.cpu_s < limits.timeout_s, "cpu_limit must come before the wall clock"
    assert sandbox.fork_server_pid is not None
    fork_server = psutil.Process(sandbox.fork_server_pid)
    wall_started = time.time()
    with Watcher(fork_server) as watcher:
        started = time.monotonic()
        outcome = sandbox.run(RunRequest(plugin=plugin, task="run_every_minute", limits=limits))
        elapsed = time.monotonic() - started
    assert outcome.outcome == expected.outcome, outcome.error
    expected.check(outcome)
    if expected.outcome == "cpu_limit":
        # The CPU limit bounds CPU seconds, not wall seconds: on a loaded host the child gets less
        # than a core, so its wall time says nothing. What must hold: it was stopped for the CPU
        # it burnt (near cpu_s), and before the wall-clock timeout could stop it.
        cpu_s = outcome.cpu_ms / 1000
        assert bound * 0.5 <= cpu_s <= bound + GRACE_S, f"{name} burnt {cpu_s:.2f} CPU s"
        assert limits.timeout_s is not None and elapsed < limits.timeout_s
    else:
        assert elapsed <= bound + GRACE_S, f"{name} took {elapsed:.2f}s (bound {bound}s + grace)"
    if expected.outcome == "timeout":
        assert elapsed >= bound * 0.9, f"{name} was stopped before its limit: {elapsed:.2f}s"
    if expected.outcome in ("timeout", "cpu_limit"):
        assert watcher.pids, "the watcher saw the run's child (so the check below means something)"
        if sandbox.layers.get("uid_drop"):
            # (it may be seen for an instant with uid 0, before it drops to its own uid)
            assert max(watcher.uids) >= UID_BASE
    assert wait_no_leftovers(watcher, wall_started) == []
    assert sandbox.fork_server_pid == fork_server.pid, "the fork server survived"


def test_every_faulty_plugin_is_in_the_table() -> None:
    on_disk = {p.name for p in FAULTY.iterdir() if (p / "plugin.json").is_file()}
    assert on_disk == set(EXPECTED)


def test_sandbox_still_runs_healthy_plugins_after_the_faulty_ones(sandbox: Sandbox) -> None:
    """Runs after the parametrized tests above (same module-scoped sandbox)."""
    pid = sandbox.fork_server_pid
    healthy = load_plugin(EXAMPLES / "minute_counter")
    outcome = sandbox.run(RunRequest(plugin=healthy, task="run_every_minute"))
    assert outcome.outcome == "ok"
    assert outcome.result == {"count": 1}
    assert sandbox.fork_server_pid == pid


def test_a_hanging_run_does_not_hold_up_a_healthy_one(sandbox: Sandbox) -> None:
    """Also shows the leftover check can fail: while the hanging run lives, it is reported."""
    hang = load_plugin(FAULTY / "infinite_loop")
    healthy = load_plugin(EXAMPLES / "minute_counter")
    assert sandbox.fork_server_pid is not None
    wall_started = time.time()
    with Watcher(psutil.Process(sandbox.fork_server_pid)) as watcher:
        pending = sandbox.submit(
            RunRequest(
                plugin=hang, task="run_every_minute", limits=resolve_limits(hang.manifest.limits)
            )
        )
        started = time.monotonic()
        outcome = sandbox.run(RunRequest(plugin=healthy, task="run_every_minute"))
        took = time.monotonic() - started
        assert outcome.outcome == "ok"
        assert took < 1.0, f"the healthy run waited {took:.2f}s behind a hanging one"
        assert not pending.done(), "the hanging run is still running meanwhile"
        time.sleep(0.1)
        assert leftovers(watcher, wall_started), "a live run is seen by the leftover check"
        assert pending.result(timeout=10).outcome == "timeout"
    assert wait_no_leftovers(watcher, wall_started) == []
