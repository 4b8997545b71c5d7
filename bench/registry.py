"""The benchmarks by name, each a module with `main(argv, quick)`."""

from __future__ import annotations

import importlib
import logging
import time

from bench.common import machine

BENCHMARKS = {
    "sandbox": "bench.sandbox_bench",
    "throughput": "bench.throughput",
    "dbcost": "bench.dbcost",
    "isolation": "bench.isolation",
    "scale": "bench.scale",
    "peers": "bench.peers_bench",
    "reload": "bench.reload",
}


def run_one(name: str, argv: list[str], quick: bool) -> object:
    # The engine's own log lines (one per run, warnings for timeouts) are not measurements.
    logging.getLogger("plugin_runtime").setLevel(logging.CRITICAL)
    info = machine()
    print(
        f"== {name}{' (quick)' if quick else ''} — {info['cores']} cores, {info['memory']}, "
        f"kernel {info['kernel']}, Python {info['python']}",
        flush=True,
    )
    module = importlib.import_module(BENCHMARKS[name])
    return module.main(argv, quick)


def run_all(quick: bool, argv: list[str]) -> int:
    """Every benchmark, one after the other (the machine has few cores: never two at once)."""
    from bench.common import BenchError

    failed = []
    for name in BENCHMARKS:
        start = time.perf_counter()
        try:
            run_one(name, list(argv), quick)
        except BenchError as exc:
            print(f"error: {name}: {exc}", flush=True)
            failed.append(name)
        except Exception as exc:  # one benchmark's failure must not cost the others' table
            print(f"error: {name}: {type(exc).__name__}: {exc}", flush=True)
            failed.append(name)
        print(f"  ({name} took {time.perf_counter() - start:.0f} s)\n", flush=True)
    from bench.targets import table

    print(table(), flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0
