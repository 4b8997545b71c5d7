"""The CPU budget of a sandboxed run, measured, for `python -m bench sandbox`.

Two sources, both real measurements:

- `CpuMeter` samples, around the headline run (no instrumentation in the sandbox), the fork
  server's CPU and that of the children it reaped (psutil `cpu_times`: the kernel's figures,
  children's from `wait4`) and this process's CPU per thread (the supervisor side: `sandbox-io`
  reads frames and outcomes, `sandbox-meta`/`sandbox-fetch` serve meta calls, the main thread
  submits). Divided by the runs: CPU per run, by part.
- `step_split` runs the same trivial runs through a second fork server started with
  `--step-timing` (sandbox/steptiming.py, bench only): the child's CPU per step (fork, each jail
  step, the plugin's exec and call, the result, exit and teardown), the fork server's per run
  (prepare, fork, exit handling), and a bare fork+_exit+waitpid of that same fork server. The
  profile hook that takes the stamps costs CPU of its own, so this split is read as shares; the
  totals are `CpuMeter`'s.

The bound: a run costs `child + fork server + supervisor` CPU, so `cores / that` runs per second
is the most this machine can do, whatever the scheduling.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from sandbox import Sandbox


def _thread_group(name: str) -> str:
    if name.startswith("sandbox-io"):
        return "frames and outcomes (sandbox-io)"
    if name.startswith(("sandbox-meta", "sandbox-fetch")):
        return "meta calls (sandbox-meta/fetch)"
    if name == "MainThread":
        return "submitting (main thread)"
    return "other threads"


def _task_cpu(pid: int, tid: int) -> float | None:
    """A thread's CPU seconds to the nanosecond (the scheduler's runtime, /proc schedstat); None
    where the kernel does not give it."""
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as fh:
            return int(fh.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def _faults(pid: int) -> tuple[int, int]:
    """A process's minor page faults and those of its reaped children (/proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[7]), int(fields[8])
    except (OSError, ValueError, IndexError):
        return 0, 0


def _threads_cpu() -> dict[str, float]:
    """This process's CPU seconds by thread group."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for t in psutil.Process().threads():
        group = _thread_group(names.get(t.id, ""))
        precise = _task_cpu(os.getpid(), t.id)
        cpu = precise if precise is not None else t.user_time + t.system_time
        out[group] = out.get(group, 0.0) + cpu
    return out


@dataclass
class CpuBudget:
    """CPU milliseconds per run, by part, over `runs` runs."""

    runs: int
    child_ms: float
    fork_server_ms: float
    supervisor_ms: dict[str, float]
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    child_faults: float = 0.0  # minor page faults per run: each a page touched for the first time
    fork_server_faults: float = 0.0

    @property
    def supervisor_total_ms(self) -> float:
        return sum(self.supervisor_ms.values())

    @property
    def total_ms(self) -> float:
        return self.child_ms + self.fork_server_ms + self.supervisor_total_ms

    @property
    def bound_per_s(self) -> float:
        """The most runs per second this machine's cores can give at this CPU per run."""
        return self.cores / (self.total_ms / 1000.0)


class CpuMeter:
    """CPU of the fork server, its children and this process's threads, between start and stop."""

    def __init__(self, sandbox: Sandbox) -> None:
        pid = sandbox.fork_server_pid
        assert pid is not None, "the sandbox is not started"
        self.server = psutil.Process(pid)

    def _sample(self) -> tuple[float, float, dict[str, float]]:
        t = self.server.cpu_times()
        # The fork server has one thread: its schedstat is the process's CPU, to the nanosecond.
        own = _task_cpu(self.server.pid, self.server.pid)
        own = t.user + t.system if own is None else own
        return own, t.children_user + t.children_system, _threads_cpu()

    def measure(self, runs: int, work: Callable[[], Any]) -> tuple[Any, CpuBudget]:
        faults0 = _faults(self.server.pid)
        server0, children0, threads0 = self._sample()
        value = work()
        server1, children1, threads1 = self._sample()
        faults1 = _faults(self.server.pid)
        per_run = 1000.0 / runs
        supervisor = {
            k: (threads1.get(k, 0.0) - threads0.get(k, 0.0)) * per_run
            for k in sorted(set(threads0) | set(threads1))
        }
        return value, CpuBudget(
            runs,
            (children1 - children0) * per_run,
            (server1 - server0) * per_run,
            {k: v for k, v in supervisor.items() if v > 0.0 or k.startswith(("frames", "submit"))},
            child_faults=(faults1[1] - faults0[1]) / runs,
            fork_server_faults=(faults1[0] - faults0[0]) / runs,
        )


@dataclass
class StepSplit:
    runs: int
    child_ms: float  # the child's CPU per run from wait4, profile hook included
    child_steps_ms: list[tuple[str, float]]
    server_ms: dict[str, float]  # prepare, fork, exit handling
    bare_fork: dict[str, float]  # forks, per_s, server_ms, child_ms, server_faults, child_faults
    child_faults: float = 0.0  # minor page faults per run, from wait4
    child_steps_faults: dict[str, float] = field(default_factory=dict)
    server_faults: float = 0.0


# Steps under this share of a millisecond are summed into one line.
_SMALL_MS = 0.02

# What each stamp label is, for the table (labels are the callees' qualified names).
_STEP_NAMES = {
    "fork": "fork: the child's side (COW faults, return to Python)",
    "getppid": "jail: read the fork server's pid",
    "setpgid": "jail: own process group",
    "closerange": "jail: close inherited descriptors",
    "setrlimit": "jail: seven rlimits",
    "nice": "jail: niceness",
    "chroot": "jail: chroot to the empty root",
    "prctl": "jail: pdeathsig, not dumpable, no_new_privs",
    "landlock_restrict": "jail: Landlock restrict_self",
    "CompiledSeccomp.load": "jail: load the seccomp BPF",
    "Channel.__init__": "run: channel",
    "list.append": "run: 256 KiB memory reserve",
    "PreparedGlobals.take_builtins": "run: restricted builtins (prepared in the fork server)",
    "reserve_memory": "run: memory reserve (inherited from the fork server)",
    "Channel.receive": "run: receive the start frame",
    "Meta.__init__": "run: meta object",
    "make_globals": "run: restricted globals (make_globals)",
    "exec": "run: exec the plugin module",
    "run_every_minute": "run: call the task",
    "checked_json": "run: check the result (checked_json)",
    "Channel.send": "run: send the result frame",
    "socket.sendall": "run: send the result frame (encoded in the fork server)",
    "TextIOWrapper.flush": "run: flush stdout",
    "exit and teardown": "exit and teardown (wait4 total - last stamp)",
}


def step_split(run: Callable[[Sandbox], None]) -> StepSplit:
    """Run `run(sandbox)` on a fork server started with step timing; its figures."""
    with tempfile.TemporaryDirectory(prefix="bench-steps-") as tmp:
        path = Path(tmp) / "steps.json"
        with Sandbox(step_timing=str(path)) as sandbox:
            run(sandbox)
        data = json.loads(path.read_text(encoding="utf-8"))
    return StepSplit(
        int(data["runs"]),
        float(data["child_ms"]),
        [(str(k), float(v)) for k, v in data["child_steps_ms"]],
        {str(k): float(v) for k, v in data["server_ms"].items()},
        {str(k): float(v) for k, v in data["bare_fork"].items()},
        float(data.get("child_faults", 0.0)),
        {str(k): float(v) for k, v in data.get("child_steps_faults", [])},
        float(data.get("server_faults", 0.0)),
    )


def print_budget(budget: CpuBudget, split: StepSplit, sandbox_per_s: float) -> None:
    load = os.getloadavg()
    print(
        f"CPU per run, measured over {budget.runs} runs (load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}), ms:"
    )
    print(
        f"  child (wait4 rusage)                               {budget.child_ms:7.3f}"
        f"   ({budget.child_faults:.0f} minor faults)"
    )
    print(
        f"  fork server (its own CPU)                          {budget.fork_server_ms:7.3f}"
        f"   ({budget.fork_server_faults:.0f} minor faults)"
    )
    for name, ms in budget.supervisor_ms.items():
        print(f"  supervisor: {name:39}{ms:7.3f}")
    print(f"  total                                              {budget.total_ms:7.3f}")
    bf = split.bare_fork
    print(
        f"  vs a bare fork+_exit+waitpid of the same fork server: {bf['server_ms']:.3f} fork server "
        f"+ {bf['child_ms']:.3f} child = {bf['server_ms'] + bf['child_ms']:.3f} "
        f"({bf['per_s']:.0f}/s one at a time; {bf.get('server_faults', 0.0):.0f} + "
        f"{bf.get('child_faults', 0.0):.0f} minor faults)"
    )
    print(
        f"  bound: {budget.cores} cores / {budget.total_ms:.3f} ms = {budget.bound_per_s:.0f} runs/s; "
        f"measured {sandbox_per_s:.0f}/s ({sandbox_per_s / budget.bound_per_s:.0%} of the bound)"
    )
    print(
        f"Split, step-timed fork server ({split.runs} runs; the profile hook's own cost included, "
        f"child total {split.child_ms:.3f} ms, {split.child_faults:.0f} minor faults; fork server "
        f"{split.server_faults:.0f} minor faults), ms per run and minor page faults per run:"
    )
    for part in ("prepare", "fork", "exit"):
        label = {
            "prepare": "after fork(): pidfd, bookkeeping",
            "fork": "fork()",
            "exit": "reap and report",
        }[part]
        print(f"  fork server: {label:50}{split.server_ms.get(part, 0.0):7.3f}")
    small = small_faults = 0.0
    for label, ms in split.child_steps_ms:
        faults = split.child_steps_faults.get(label, 0.0)
        if ms < _SMALL_MS and label not in _STEP_NAMES:
            small += ms
            small_faults += faults
            continue
        print(f"  child: {_STEP_NAMES.get(label, label):56}{ms:7.3f} {faults:6.0f}")
    print(f"  child: {'everything else (each < 0.02)':56}{small:7.3f} {small_faults:6.0f}")


@dataclass
class EngineBudget:
    """CPU milliseconds per run end to end, by process, over a measured window."""

    runs: int
    parts_ms: dict[str, float]
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)

    @property
    def total_ms(self) -> float:
        return sum(self.parts_ms.values())

    @property
    def bound_per_s(self) -> float:
        return self.cores / (self.total_ms / 1000.0)

    def describe(self, measured_per_s: float) -> str:
        parts = ", ".join(f"{k} {v:.3f}" for k, v in self.parts_ms.items())
        load = os.getloadavg()
        return (
            f"CPU per run end to end, ms: {parts}; total {self.total_ms:.3f} -> bound "
            f"{self.cores} cores / {self.total_ms:.3f} ms = {self.bound_per_s:.0f} runs/s; "
            f"measured {measured_per_s:.0f}/s ({measured_per_s / self.bound_per_s:.0%} of the "
            f"bound; load average {load[0]:.2f})"
        )


class EngineMeter:
    """CPU of the supervisor (this process, or the `serve` process `root`), its fork server and
    the runs it reaped, and the PostgreSQL backends serving the node, between two samples."""

    def __init__(self, backend_pids: Callable[[], list[int]], root: int | None = None) -> None:
        self.backend_pids = backend_pids
        self.me = psutil.Process(root)

    def _fork_servers(self) -> list[psutil.Process]:
        out = []
        for child in self.me.children(recursive=False):
            try:
                if "sandbox.forkserver" in " ".join(child.cmdline()):
                    out.append(child)
            except psutil.Error:
                pass
        return out

    def sample(self) -> dict[str, dict[int, float]]:
        def cpu(p: psutil.Process, children: bool = False) -> float:
            t = p.cpu_times()
            return t.children_user + t.children_system if children else t.user + t.system

        out: dict[str, dict[int, float]] = {
            "supervisor": {self.me.pid: cpu(self.me)},
            "fork server": {},
            "children": {},
            "postgres": {},
        }
        for server in self._fork_servers():
            try:
                out["fork server"][server.pid] = cpu(server)
                out["children"][server.pid] = cpu(server, children=True)
            except psutil.Error:
                pass
        for pid in self.backend_pids():
            try:
                out["postgres"][pid] = cpu(psutil.Process(pid))
            except psutil.Error:
                pass
        return out

    @staticmethod
    def budget(
        before: dict[str, dict[int, float]], after: dict[str, dict[int, float]], runs: int
    ) -> EngineBudget:
        """Per run, over the processes present at both samples."""
        parts = {}
        for part in ("children", "fork server", "supervisor", "postgres"):
            common = set(before[part]) & set(after[part])
            seconds = sum(after[part][p] - before[part][p] for p in common)
            parts[part] = seconds * 1000.0 / max(runs, 1)
        return EngineBudget(runs, parts)
