"""`make bench`'s table: each target with the figure recorded in the run, met or not, and the
targets nobody measured shown as such."""

from __future__ import annotations

from bench.common import Figure
from bench.targets import TARGETS, table


def _row(text: str, what: str) -> str:
    [line] = [line for line in text.splitlines() if line.startswith(what)]
    return line


def test_each_target_is_a_row_met_or_not() -> None:
    figures = [
        Figure("sandbox_vs_fork", 1.5, 0.5, "600/s vs 400/s"),
        Figure("throughput_vs_fork", 0.5, 3.2),
        Figure("supervisor_rss_mib", 61.6, 0.4),
        Figure("supervisor_rss_mib", 120.0, 0.4),  # the latest of a name counts
        Figure("statements_per_run", 0.01, 0.1),  # on the bound is met
    ]
    text = table(figures)
    assert len(text.splitlines()) == len(TARGETS) + 2  # header, rule, one row per target
    sandbox = _row(text, "sandbox alone")
    assert "1.5" in sandbox and ">= 1.1" in sandbox and " yes " in sandbox
    assert "600/s vs 400/s" in sandbox and "0.50" in sandbox
    assert " NO " in _row(text, "end to end / bare fork") and "3.20" in _row(
        text, "end to end / bare fork"
    )
    assert " NO " in _row(text, "supervisor RSS")
    assert " yes " in _row(text, "statements per run")
    assert "not measured" in _row(text, "end to end / Procrastinate")
