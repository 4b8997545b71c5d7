"""PNG figures for docs/benchmarks.md (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from bench.common import IMG_DIR


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def lag_cdf(
    series: Mapping[str, Sequence[float]], title: str, name: str, *, note: str = ""
) -> Path:
    """Cumulative distribution of start lags (seconds, log scale), one line per series."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for label, values in series.items():
        if not values:
            continue
        ordered = sorted(max(v, 1e-3) for v in values)
        n = len(ordered)
        ax.step(ordered, [(i + 1) / n for i in range(n)], where="post", label=f"{label} (n={n})")
    ax.set_xscale("log")
    ax.set_xlabel("healthy tasks' start lag, real seconds (log scale)")
    ax.set_ylabel("share of runs started")
    ax.axvline(2.0, color="grey", linestyle=":", linewidth=1)
    ax.text(2.05, 0.02, "2 s target", color="grey", fontsize=8)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="dimgrey")
    return _save(fig, name)


def bars(
    values: Mapping[str, float],
    title: str,
    ylabel: str,
    name: str,
    *,
    log: bool = False,
    note: str = "",
) -> Path:
    """One bar per entry, its value written on top."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    labels = list(values)
    heights = [values[k] for k in labels]
    drawn = ax.bar(range(len(labels)), heights, color=[f"C{i}" for i in range(len(labels))])
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    for rect, value in zip(drawn, heights, strict=True):
        ax.annotate(
            f"{value:.3g}",
            (rect.get_x() + rect.get_width() / 2, rect.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="dimgrey")
    return _save(fig, name)


def _save(fig: object, name: str) -> Path:
    IMG_DIR.mkdir(parents=True, exist_ok=True)
    path = IMG_DIR / name
    fig.tight_layout(rect=(0, 0.03, 1, 1))  # type: ignore[attr-defined]
    fig.savefig(path)  # type: ignore[attr-defined]
    _pyplot().close(fig)
    print(f"plot: {path.relative_to(IMG_DIR.parent.parent)}")
    return path
