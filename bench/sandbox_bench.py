"""`python -m bench sandbox`: trivial runs per second through the full jail, against the bare
fork rate measured in the same process, in the same run.

Every run is a fresh jailed child forked by the warm fork server, running the no-op plugin's
`run_every_minute` under RestrictedPython and answering in a JSON frame. Runs are submitted
concurrently (at most `--inflight` outstanding), as the dispatcher does.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass

from bench.common import PLUGINS_DIR, BenchError, fork_rate, result
from sandbox import RunRequest, Sandbox, load_plugin


@dataclass
class SandboxFigures:
    fork_per_s: float
    sandbox_per_s: float
    runs: int
    outcomes: dict[str, int]
    layers: dict[str, bool]

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


def measure(runs: int, fork_seconds: float, inflight: int) -> SandboxFigures:
    with Sandbox() as sandbox:
        sandbox_rate(sandbox, min(50, runs), inflight)  # warm: the plugin compiled, the pages hot
        forks_before = fork_rate(fork_seconds)
        per_s, outcomes = sandbox_rate(sandbox, runs, inflight)
        forks_after = fork_rate(fork_seconds)
        layers = dict(sandbox.layers)
    # The fork rate is taken before and after (same process, same memory), the mean reported.
    return SandboxFigures((forks_before + forks_after) / 2, per_s, runs, outcomes, layers)


def main(argv: list[str], quick: bool) -> SandboxFigures:
    parser = argparse.ArgumentParser(prog="python -m bench sandbox")
    parser.add_argument("--runs", type=int, default=1000 if quick else 5000)
    parser.add_argument("--inflight", type=int, default=32, help="runs outstanding at once")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.inflight < 1:
        parser.error("--runs and --inflight must be at least 1")
    fork_seconds = 1.0 if quick or args.runs < 500 else 3.0
    figures = measure(args.runs, fork_seconds, args.inflight)
    if figures.outcomes.get("ok", 0) != figures.runs:
        raise BenchError(f"not every trivial run succeeded: {figures.outcomes}")
    layers = ", ".join(f"{k}={'on' if v else 'OFF'}" for k, v in figures.layers.items())
    print(f"sandbox.layers: {layers}")
    print(f"bare fork+_exit+waitpid: {figures.fork_per_s:.0f}/s")
    print(
        f"sandbox runs ({figures.runs}, {args.inflight} in flight): {figures.sandbox_per_s:.0f}/s, "
        f"outcomes {figures.outcomes}"
    )
    result("sandbox_vs_fork", figures.ratio)
    return figures
