"""The targets, and the one table `python -m bench all` (`make bench`) ends with: each figure
recorded in the run (bench/common.py `record`), its target, whether it is met, the load average
when it was taken and the conditions it was taken under."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

from bench.common import FIGURES, Figure


@dataclass(frozen=True)
class Target:
    figure: str  # the recorded name
    what: str
    op: str  # ">=" or "<="
    bound: float

    def met(self, value: float) -> bool:
        check: Callable[[float, float], bool] = operator.ge if self.op == ">=" else operator.le
        return check(value, self.bound)


TARGETS = (
    Target("sandbox_vs_fork", "sandbox alone / bare fork rate", ">=", 1.1),
    Target("throughput_vs_fork", "end to end / bare fork rate", ">=", 0.9),
    Target("vs_procrastinate", "end to end / Procrastinate in-process no-op", ">=", 1.0),
    Target("sandbox_vs_multiprocess_fork", "sandbox / multiprocess.Process (fork)", ">=", 3.0),
    Target(
        "sandbox_vs_multiprocess_forkserver",
        "sandbox / multiprocess.Process (forkserver)",
        ">=",
        3.0,
    ),
    Target("runs_on_time", "minute runs started inside their minute", ">=", 1.0),
    Target("supervisor_rss_mib", "supervisor RSS (MiB), fork server excluded", "<=", 100.0),
    Target("statements_per_run", "statements per run (server-counted)", "<=", 0.01),
    Target("lag_p99_with_faults_s", "healthy start lag p99 (s), 10 % hanging", "<=", 0.25),
)


def _latest(name: str, figures: list[Figure]) -> Figure | None:
    found = [f for f in figures if f.name == name]
    return found[-1] if found else None


def table(figures: list[Figure] | None = None) -> str:
    rows = [("figure", "measured", "target", "met?", "load", "conditions")]
    for target in TARGETS:
        fig = _latest(target.figure, FIGURES if figures is None else figures)
        bound = f"{target.op} {target.bound:g}"
        if fig is None or not isinstance(fig.value, int | float):
            rows.append((target.what, "not measured", bound, "-", "-", ""))
            continue
        rows.append(
            (
                target.what,
                f"{fig.value:.4g}",
                bound,
                "yes" if target.met(float(fig.value)) else "NO",
                f"{fig.load:.2f}",
                fig.note,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
