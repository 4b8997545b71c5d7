"""The bench-only step timing (sandbox/steptiming.py): off unless asked for, real per-step
figures when on, and a parse of the child-written slot that survives arbitrary bytes."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import psutil

from sandbox import RunRequest, Sandbox, load_plugin
from sandbox.steptiming import MAX_ENTRIES, SLOT_BYTES, StepTiming

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def _request() -> RunRequest:
    return RunRequest(plugin=load_plugin(PLUGINS / "tiny"), task="run_every_hour")


def test_off_by_default() -> None:
    with Sandbox() as sandbox:
        assert sandbox.submit(_request()).result(30).outcome == "ok"
        pid = sandbox.fork_server_pid
        assert pid is not None
        assert "--step-timing" not in psutil.Process(pid).cmdline()


def test_on_it_writes_each_step_of_the_jail_and_the_run(tmp_path: Path) -> None:
    path = tmp_path / "steps.json"
    with Sandbox(step_timing=str(path)) as sandbox:
        for _ in range(5):
            assert sandbox.submit(_request()).result(30).outcome == "ok"
    data = json.loads(path.read_text())
    assert data["runs"] == 5 and data["untimed"] == 0
    steps = dict(data["child_steps_ms"])
    for step in ("fork", "setpgid", "setrlimit", "prctl", "Channel.receive", "Channel.send"):
        assert step in steps, sorted(steps)
    assert steps["exit and teardown"] >= 0
    # The steps add up to the child's CPU as wait4 reports it.
    assert abs(sum(steps.values()) - data["child_ms"]) < 0.01
    assert data["bare_fork"]["forks"] > 0 and data["bare_fork"]["per_s"] > 0
    # Minor page faults per step too (pages first touched after the fork); they add up to the
    # child's total from wait4, and a jailed run touches more pages than a bare fork.
    faults = dict(data["child_steps_faults"])
    assert set(faults) == set(steps)
    assert abs(sum(faults.values()) - data["child_faults"]) < 0.01
    assert faults["fork"] > 0 and data["child_faults"] > data["bare_fork"]["child_faults"] > 0
    assert set(data["server_ms"]) == {"prepare", "fork", "exit"}


def test_a_slot_of_garbage_is_dropped_not_trusted(tmp_path: Path) -> None:
    timing = StepTiming(str(tmp_path / "x.json"))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    for garbage in (
        b"\xff\xfe=12\n\x00",
        b"a=" + b"9" * 40,
        b"=5\nlabel with space=3",
        b"\n".join(b"x=1" for _ in range(MAX_ENTRIES + 1)),
        bytes(range(256)) * (SLOT_BYTES // 256),
    ):
        slot = timing.take_slot()
        assert slot is not None
        timing.area[slot * SLOT_BYTES : slot * SLOT_BYTES + len(garbage[:SLOT_BYTES])] = garbage[
            :SLOT_BYTES
        ]
        timing.collect(slot, usage)
    assert timing.runs == 0 and timing.untimed == 5
    assert timing.steps == {}
    # A well-formed slot counts, and the slot is reusable (zeroed when taken again).
    slot = timing.take_slot()
    assert slot is not None
    timing.area[slot * SLOT_BYTES : slot * SLOT_BYTES + 13] = b"fork=1000\nb=3"
    timing.collect(slot, usage)
    assert timing.runs == 1 and timing.steps["fork"] == 1000
    # With faults (`label=ns:faults`); a fault count past nine digits drops the run.
    slot = timing.take_slot()
    assert slot is not None
    data = b"fork=1000:7\nb=3:9\n"
    timing.area[slot * SLOT_BYTES : slot * SLOT_BYTES + len(data)] = data
    timing.collect(slot, usage)
    assert timing.runs == 2 and timing.faults["fork"] == 7 and timing.faults["b"] == 2
    slot = timing.take_slot()
    assert slot is not None
    data = b"fork=1:1234567890"
    timing.area[slot * SLOT_BYTES : slot * SLOT_BYTES + len(data)] = data
    timing.collect(slot, usage)
    assert timing.runs == 2 and timing.untimed == 6
