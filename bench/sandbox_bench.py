"""`python -m bench sandbox`: trivial runs per second through the full jail, against the bare
fork rate and against `multiprocess.Process` per run, all measured in the same process, in the
same run.

Every run is a fresh jailed child forked by the warm fork server, running the no-op plugin's
`run_every_minute` under RestrictedPython and answering in a JSON frame. Runs are submitted
concurrently (at most `--inflight` outstanding), as the dispatcher does.

The alternative a user would reach for is the `multiprocess` package (multiprocessing with dill):
one `multiprocess.Process` per run, with the fork and the forkserver start methods, the same
rlimits as the jail (CPU, address space, file size, core, descriptors, processes), the result
sent back over a `multiprocess.Pipe` and a wall-time `join` that kills a late run; `--inflight`
of them at once. No chroot, uid, namespace, seccomp, Landlock or restricted Python: this is the
cost of a process per run alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bench.budget import CpuBudget, CpuMeter, StepSplit, print_budget, step_split
from bench.common import PLUGINS_DIR, BenchError, fork_rate, record, result
from sandbox import DEFAULT_LIMITS, RunRequest, Sandbox, load_plugin
from sandbox.jail import NOFILE_PER_RUN, NPROC_PER_RUN

MP_METHODS = ("fork", "forkserver")


@dataclass
class SandboxFigures:
    fork_per_s: float
    sandbox_per_s: float
    runs: int
    outcomes: dict[str, int]
    layers: dict[str, bool]
    # multiprocess.Process per run, by start method: (runs per second, outcomes)
    multiprocess: dict[str, tuple[float, dict[str, int]]] = field(default_factory=dict)
    budget: CpuBudget | None = None  # CPU per run by part, over the headline runs
    split: StepSplit | None = None  # the same runs step by step, on a step-timed fork server

    @property
    def ratio(self) -> float:
        return self.sandbox_per_s / self.fork_per_s


def sandbox_rate(sandbox: Sandbox, runs: int, inflight: int) -> tuple[float, dict[str, int]]:
    """Runs per second for `runs` trivial runs with `inflight` outstanding at once."""
    request = RunRequest(plugin=load_plugin(PLUGINS_DIR / "noop"), task="run_every_minute")
    slots = threading.Semaphore(inflight)
    outcomes: dict[str, int] = {}
    lock = threading.Lock()
    all_done = threading.Event()
    remaining = [runs]

    def done(future: object) -> None:
        outcome = future.result()  # type: ignore[attr-defined]
        slots.release()
        with lock:
            outcomes[outcome.outcome] = outcomes.get(outcome.outcome, 0) + 1
            remaining[0] -= 1
            if remaining[0] == 0:
                all_done.set()

    start = time.perf_counter()
    for _ in range(runs):
        slots.acquire()
        sandbox.submit(request).add_done_callback(done)
    all_done.wait()
    return runs / (time.perf_counter() - start), outcomes


def _mp_run(conn: Any, fn: Callable[[Any], Any], cpu_s: float, memory_mb: int) -> None:
    """The child of one multiprocess.Process run: the jail's rlimits, the call, the answer."""
    cpu = max(1, int(-(-cpu_s // 1)))
    for which, value in (
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (memory_mb * 1024 * 1024,) * 2),
        (resource.RLIMIT_FSIZE, (0, 0)),
        (resource.RLIMIT_CORE, (0, 0)),
        (resource.RLIMIT_NOFILE, (NOFILE_PER_RUN, NOFILE_PER_RUN)),
        (resource.RLIMIT_NPROC, (NPROC_PER_RUN, NPROC_PER_RUN)),
    ):
        resource.setrlimit(which, value)
    try:
        conn.send({"outcome": "ok", "result": fn(None)})
    except BaseException as exc:  # the run's failure is its outcome, as in the sandbox
        conn.send({"outcome": "error", "error": repr(exc)})
    finally:
        conn.close()


def _noop_function() -> Callable[[Any], Any]:
    """The no-op plugin's `run_every_minute`, imported as plain Python."""
    spec = importlib.util.spec_from_file_location(
        "bench_noop_main", PLUGINS_DIR / "noop" / "main.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn: Callable[[Any], Any] = module.run_every_minute
    return fn


def multiprocess_rate(method: str, runs: int, inflight: int) -> tuple[float, dict[str, int]]:
    """Runs per second of one `multiprocess.Process` per run (start method `method`), `inflight`
    at once, each with the jail's rlimits and wall-time limit."""
    try:
        import multiprocess  # type: ignore[import-untyped]
    except ImportError:
        raise BenchError(
            "the multiprocess package is not installed (pip install multiprocess)"
        ) from None
    ctx = multiprocess.get_context(method)
    if method == "forkserver":
        # Import this module once in the fork server, as a user tuning it would: otherwise
        # every child imports it (and what it imports) to unpickle its target.
        ctx.set_forkserver_preload([__name__])
    fn = _noop_function()
    limits = DEFAULT_LIMITS
    assert (
        limits.timeout_s is not None and limits.cpu_s is not None and limits.memory_mb is not None
    )
    timeout_s, cpu_s, memory_mb = limits.timeout_s, limits.cpu_s, limits.memory_mb

    def one(_: int) -> str:
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_mp_run, args=(child, fn, cpu_s, memory_mb), daemon=True)
        proc.start()
        child.close()
        outcome = "crashed"
        if parent.poll(timeout_s):
            try:
                outcome = str(parent.recv()["outcome"])
            except EOFError:
                outcome = "crashed"
        else:
            outcome = "timeout"
        proc.join(1.0)
        if proc.is_alive():
            proc.kill()
            proc.join()
        parent.close()
        return outcome

    outcomes: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=inflight) as pool:
        list(pool.map(one, range(min(20, runs))))  # warm: the fork server up, the pages hot
        start = time.perf_counter()
        for outcome in pool.map(one, range(runs)):
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        elapsed = time.perf_counter() - start
    return runs / elapsed, outcomes


def measure(
    runs: int, fork_seconds: float, inflight: int, mp_runs: int = 0, *, split_runs: int = 500
) -> SandboxFigures:
    """The rates and the CPU budget; `split_runs` more runs on a step-timed fork server (0:
    none); `mp_runs` multiprocess.Process runs per start method (0: none)."""
    with Sandbox() as sandbox:
        sandbox_rate(sandbox, min(50, runs), inflight)  # warm: the plugin compiled, the pages hot
        forks_before = fork_rate(fork_seconds)
        (per_s, outcomes), budget = CpuMeter(sandbox).measure(
            runs, lambda: sandbox_rate(sandbox, runs, inflight)
        )
        forks_after = fork_rate(fork_seconds)
        layers = dict(sandbox.layers)
    # The fork rate is taken before and after (same process, same memory), the mean reported.
    figures = SandboxFigures((forks_before + forks_after) / 2, per_s, runs, outcomes, layers)
    figures.budget = budget
    split_runs = min(runs, split_runs)
    if split_runs > 0:

        def timed_runs(timed: Sandbox) -> None:
            sandbox_rate(timed, min(50, split_runs), inflight)
            sandbox_rate(timed, split_runs, inflight)

        figures.split = step_split(timed_runs)
    for method in MP_METHODS if mp_runs else ():
        figures.multiprocess[method] = multiprocess_rate(method, mp_runs, inflight)
    return figures


def main(argv: list[str], quick: bool) -> SandboxFigures:
    parser = argparse.ArgumentParser(prog="python -m bench sandbox")
    parser.add_argument("--runs", type=int, default=1000 if quick else 5000)
    parser.add_argument("--inflight", type=int, default=32, help="runs outstanding at once")
    parser.add_argument(
        "--mp-runs",
        type=int,
        default=None,
        help="multiprocess.Process runs per start method (default: --runs; 0: skip)",
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.inflight < 1:
        parser.error("--runs and --inflight must be at least 1")
    mp_runs = args.runs if args.mp_runs is None else args.mp_runs
    if mp_runs < 0:
        parser.error("--mp-runs must be at least 0")
    fork_seconds = 1.0 if quick or args.runs < 500 else 3.0
    figures = measure(args.runs, fork_seconds, args.inflight, mp_runs)
    if figures.outcomes.get("ok", 0) != figures.runs:
        raise BenchError(f"not every trivial run succeeded: {figures.outcomes}")
    for method, (_, mp_outcomes) in figures.multiprocess.items():
        if mp_outcomes.get("ok", 0) != mp_runs:
            raise BenchError(f"not every multiprocess ({method}) run succeeded: {mp_outcomes}")
    layers = ", ".join(f"{k}={'on' if v else 'OFF'}" for k, v in figures.layers.items())
    print(f"sandbox.layers: {layers}")
    print(f"bare fork+_exit+waitpid: {figures.fork_per_s:.0f}/s")
    print(
        f"sandbox runs ({figures.runs}, {args.inflight} in flight): {figures.sandbox_per_s:.0f}/s, "
        f"outcomes {figures.outcomes}"
    )
    for method, (mp_per_s, _) in figures.multiprocess.items():
        print(
            f"multiprocess.Process per run, {method} ({mp_runs}, {args.inflight} in flight, "
            f"same rlimits): {mp_per_s:.0f}/s; sandbox is {figures.sandbox_per_s / mp_per_s:.2f}x"
        )
        record(
            f"sandbox_vs_multiprocess_{method}",
            figures.sandbox_per_s / mp_per_s,
            note=f"{figures.sandbox_per_s:.0f}/s vs {mp_per_s:.0f}/s, {mp_runs} runs",
        )
    if figures.budget is not None and figures.split is not None:
        print_budget(figures.budget, figures.split, figures.sandbox_per_s)
        needed = figures.budget.cores * 1000.0 / (1.1 * figures.fork_per_s)
        print(
            f"target >= 1.1 x bare fork needs <= {needed:.3f} ms of CPU per run on "
            f"{figures.budget.cores} cores; measured {figures.budget.total_ms:.3f} ms"
        )
    result(
        "sandbox_vs_fork",
        figures.ratio,
        note=f"{figures.sandbox_per_s:.0f}/s vs {figures.fork_per_s:.0f}/s, {figures.runs} runs",
    )
    return figures
