"""Bench-only: where each run's CPU goes, step by step, for `python -m bench sandbox`.

Off unless the fork server is started with `--step-timing PATH` (`Sandbox(step_timing=PATH)`);
nothing here is imported or run otherwise, and production never turns it on.

When on, the fork server maps a shared anonymous area with one slot per run in flight. In the
child, a profile hook stamps the child's CPU time (CLOCK_THREAD_CPUTIME_ID, which starts at zero
at fork) and its minor page faults (`getrusage(RUSAGE_THREAD)`, also zero at fork: the pages each
step touches for the first time) at the end of every call made by the jail (`JailPlan.enter`) and by the run
(`run_child`, `_execute`), and writes the stamps into the run's slot just before `os._exit`.
After `wait4` the fork server reads the slot, turns the stamps into per-step deltas and adds
them up; the child's total comes from `wait4`'s rusage, so exit and teardown are that total less
the last stamp. The child is assumed compromised and may write anything in the area (any
slot): the parse
is bounded and drops what does not fit (labels up to 64 printable characters, integer
nanoseconds and, optionally, minor page faults, at most MAX_ENTRIES lines), and the figures only ever reach the JSON file. The child
can send nothing more to the supervisor than without it.

The fork server's own CPU per run is split the same way (`fork()`, the work after it, handling
the exit), and at shutdown it measures a bare `fork()+_exit(0)+waitpid` of itself, so the budget has
its reference measured by the same process, then writes everything to PATH as JSON.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import resource
import sys
import time
import types
from collections.abc import Callable
from typing import Any

SLOT_BYTES = 4096
SLOTS = 512
MAX_ENTRIES = 200
# `label=nanoseconds` or `label=nanoseconds:minor_faults` (both counted from the fork).
_LINE = re.compile(rb"([\x21-\x39\x3b\x3c\x3e-\x7e]{1,64})=(\d{1,15})(?::(\d{1,9}))?")
# The thread clock: the child has one thread, and once RLIMIT_CPU is set the process clock
# reads the process CPU timer, which only advances at ticks and context switches.
_CPU = time.CLOCK_THREAD_CPUTIME_ID


def bare_fork_loop(seconds: float) -> tuple[int, float]:
    """`os.fork()` + `os._exit(0)` in the child + `os.waitpid` in this process, one at a time,
    for at least `seconds`: (forks, elapsed seconds). The machine's reference for a fork (the
    fork server's budget here, and `bench`'s fork rate)."""
    count = 0
    start = time.perf_counter()
    while True:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        count += 1
        if count % 16 == 0 and time.perf_counter() - start >= seconds:
            return count, time.perf_counter() - start


class StepTiming:
    def __init__(self, path: str) -> None:
        self.path = path
        self.area = mmap.mmap(-1, SLOT_BYTES * SLOTS)  # MAP_SHARED | MAP_ANONYMOUS
        self.free = list(range(SLOTS - 1, -1, -1))
        self.steps: dict[str, int] = {}  # label -> nanoseconds summed over runs
        self.faults: dict[str, int] = {}  # label -> minor page faults summed over runs
        self.child_faults = 0  # the children's minor faults, from wait4
        self._server_faults_at: int | None = None  # the fork server's, at the first run
        self.order: list[str] = []  # labels in the order first seen
        self.runs = 0
        self.untimed = 0  # runs without a free slot or with an unreadable one
        self.child_total_ns = 0
        self.server_ns = {"prepare": 0, "fork": 0, "exit": 0}

    # -- the fork server's side --------------------------------------------------------------
    def take_slot(self) -> int | None:
        if self._server_faults_at is None:
            self._server_faults_at = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        if not self.free:
            return None
        slot = self.free.pop()
        self.area[slot * SLOT_BYTES : (slot + 1) * SLOT_BYTES] = bytes(SLOT_BYTES)
        return slot

    def collect(self, slot: int | None, rusage: Any) -> None:
        if slot is None:
            self.untimed += 1
            return
        raw = self.area[slot * SLOT_BYTES : (slot + 1) * SLOT_BYTES].split(b"\0", 1)[0]
        self.free.append(slot)
        entries = [m.groups() for m in map(_LINE.fullmatch, raw.split(b"\n")) if m]
        if rusage is None or not entries or len(entries) > MAX_ENTRIES:
            self.untimed += 1
            return
        total = int((rusage.ru_utime + rusage.ru_stime) * 1e9)
        total_faults = int(rusage.ru_minflt)
        previous = previous_faults = 0
        for label_b, ns_b, faults_b in entries:
            ns = int(ns_b)
            label = label_b.decode("ascii")
            if label not in self.steps:
                self.steps[label] = 0
                self.faults[label] = 0
                self.order.append(label)
            self.steps[label] += max(0, ns - previous)
            previous = max(previous, ns)
            if faults_b is not None:
                faults = int(faults_b)
                self.faults[label] += max(0, faults - previous_faults)
                previous_faults = max(previous_faults, faults)
        last = "exit and teardown"
        if last not in self.order:
            self.steps[last] = self.faults[last] = 0
            self.order.append(last)
        self.steps[last] += max(0, total - previous)
        self.faults[last] += max(0, total_faults - previous_faults)
        self.child_total_ns += total
        self.child_faults += total_faults
        self.runs += 1

    def bare_forks(self, seconds: float = 1.0) -> dict[str, float]:
        """Bare fork+_exit(0)+waitpid of this process, one at a time: rate and CPU per fork."""
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        cpu_before = time.thread_time_ns()
        count, elapsed = bare_fork_loop(seconds)
        cpu = time.thread_time_ns() - cpu_before
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        faults_after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        child = (after.ru_utime + after.ru_stime) - (
            children_before.ru_utime + children_before.ru_stime
        )
        return {
            "forks": count,
            "per_s": count / elapsed,
            "server_ms": cpu / 1e6 / count,
            "child_ms": child * 1000.0 / count,
            "server_faults": (faults_after - faults_before) / count,
            "child_faults": (after.ru_minflt - children_before.ru_minflt) / count,
        }

    def finish(self) -> None:
        runs = max(1, self.runs)
        served = self.runs + self.untimed
        server_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - (
            self._server_faults_at or 0
        )
        bare = self.bare_forks()
        report = {
            "runs": self.runs,
            "untimed": self.untimed,
            "child_ms": self.child_total_ns / 1e6 / runs,
            "child_steps_ms": [(label, self.steps[label] / 1e6 / runs) for label in self.order],
            "child_faults": self.child_faults / runs,
            "child_steps_faults": [(label, self.faults[label] / runs) for label in self.order],
            "server_ms": {k: v / 1e6 / runs for k, v in self.server_ns.items()},
            "server_faults": server_faults / max(1, served),
            "bare_fork": bare,
        }
        with open(self.path, "w", encoding="utf-8") as fh:
            json.dump(report, fh)


def start_child(area: mmap.mmap, slot: int, watched: frozenset[types.CodeType]) -> None:
    """In the child, first thing after fork: stamp the fork, then every call that a watched frame
    makes; write the stamps into the slot when the child calls os._exit."""
    clock = time.clock_gettime_ns
    usage = resource.getrusage
    thread = resource.RUSAGE_THREAD
    stamps: list[str] = [f"fork={clock(_CPU)}:{usage(thread).ru_minflt}"]
    exit_ = os._exit

    def hook(frame: types.FrameType, event: str, arg: Any) -> None:
        if event == "c_return":
            if frame.f_code in watched:
                now, faults = clock(_CPU), usage(thread).ru_minflt
                stamps.append(f"{getattr(arg, '__qualname__', '?')}={now}:{faults}")
        elif event == "return":
            back = frame.f_back
            if back is not None and back.f_code in watched:
                now, faults = clock(_CPU), usage(thread).ru_minflt
                stamps.append(f"{frame.f_code.co_qualname}={now}:{faults}")
        elif event == "c_call" and arg is exit_:
            data = "\n".join(stamps[:MAX_ENTRIES]).encode("ascii", "replace")[: SLOT_BYTES - 1]
            area[slot * SLOT_BYTES : slot * SLOT_BYTES + len(data)] = data

    sys.setprofile(hook)


def watched_codes(*functions: Callable[..., Any]) -> frozenset[types.CodeType]:
    return frozenset(f.__code__ for f in functions)
