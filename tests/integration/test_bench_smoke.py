"""`python -m bench` runs and ends with its one-line result; bad input gets a one-line error.
Behaviour, not numbers: the figures themselves live in docs/benchmarks.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str, timeout: float = 110) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_sandbox_bench_ends_with_its_ratio_line() -> None:
    proc = bench("sandbox", "--quick", "--runs", "50")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"sandbox_vs_fork: \d+(\.\d+)?(e[+-]?\d+)?", lines[-1]), lines[-1]
    assert any(line.startswith("sandbox.layers: ") for line in lines)
    assert float(lines[-1].split(": ")[1]) > 0
    # multiprocess.Process per run, both start methods, measured in the same run.
    for method in ("fork", "forkserver"):
        [ratio] = [line for line in lines if line.startswith(f"sandbox_vs_multiprocess_{method}: ")]
        assert float(ratio.split(": ")[1]) > 0
    # The CPU budget: measured parts, the bound computed from them, the step-by-step split.
    text = proc.stdout
    for part in (
        "child (wait4 rusage)",
        "fork server (its own CPU)",
        "supervisor: frames and outcomes (sandbox-io)",
        "bound: ",
        "vs a bare fork+_exit+waitpid of the same fork server",
        "jail: load the seccomp BPF",
        "run: send the result frame",
        "exit and teardown",
    ):
        assert part in text, part


def test_unknown_benchmark_is_a_one_line_error() -> None:
    proc = bench("nosuch")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: unknown benchmark 'nosuch' (known: sandbox, throughput, dbcost, isolation, scale, peers, reload, all)"
    )


def test_bad_size_is_refused_without_a_traceback() -> None:
    proc = bench("sandbox", "--runs", "0")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "--runs and --inflight must be at least 1" in proc.stderr
