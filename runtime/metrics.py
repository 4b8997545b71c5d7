"""Prometheus metrics of a node (every name prefixed `plugin_runtime_`), served on `--http`.

The fleet-wide metrics are labelled by cadence (and outcome, or kill reason). The per-plugin
ones (`plugin_runtime_plugin_*`) add a `plugin` label, never a config id: the number of series
a node exports is bounded by the number of plugins, and that number is capped here
(`PluginLabels`, the one home of the cap): the first `MAX_PLUGIN_LABELS` plugin names a node
sees get a label of their own, every further plugin is reported as `plugin="_other"`. A plugin
name is third-party input: what reaches a label is cut to `MAX_LABEL_CHARS` and holds only
letters, digits, '_', '-' and '.' (`safe_label`).

The cadence label takes the `Cadence` values (every cron schedule is `cron`) and `manual` for
a run triggered by hand (`CADENCE_LABELS`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sandbox.manifest import Cadence
from sandbox.outcome import Outcome

REGISTRY = CollectorRegistry(auto_describe=True)

MANUAL = "manual"  # the cadence label of a run triggered by hand
CADENCE_LABELS = (*(c.value for c in Cadence), MANUAL)
MAX_PLUGIN_LABELS = 500  # distinct plugin label values per node; further plugins: OTHER_PLUGIN
MAX_LABEL_CHARS = 100  # a plugin's label is cut to this (plugin names are at most 100 chars)
OTHER_PLUGIN = "_other"  # cannot be a plugin's name: names start with a letter or a digit
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")

RUNS = Counter(
    "plugin_runtime_runs",
    "Finished runs by cadence and outcome",
    ["cadence", "outcome"],
    registry=REGISTRY,
)
START_LAG = Histogram(
    "plugin_runtime_start_lag_seconds",
    "Start time minus (slot + spread offset), on-time first attempts only",
    ["cadence"],
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
)
RUN_DURATION = Histogram(
    "plugin_runtime_run_duration_seconds",
    "Wall time of runs in the sandbox",
    ["cadence"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
QUEUE_DEPTH = Gauge(
    "plugin_runtime_queue_depth", "Runs claimed by this node and not started yet", registry=REGISTRY
)
RUNNING = Gauge("plugin_runtime_running_runs", "Runs in flight on this node", registry=REGISTRY)
MISSED = Counter(
    "plugin_runtime_missed_slots",
    "Slots older than the catch-up window, never run",
    ["cadence"],
    registry=REGISTRY,
)
COALESCED = Counter(
    "plugin_runtime_coalesced_slots", "Minute slots folded into a later run", registry=REGISTRY
)
QUARANTINED = Gauge(
    "plugin_runtime_quarantined_configs", "Configs quarantined now", registry=REGISTRY
)
SANDBOX_KILLS = Counter(
    "plugin_runtime_sandbox_kills",
    "Runs ended by a limit, by reason",
    ["reason"],
    registry=REGISTRY,
)
DB_ERRORS = Counter(
    "plugin_runtime_database_errors", "Database errors seen by this node", registry=REGISTRY
)
DB_UP = Gauge(
    "plugin_runtime_database_up", "1 when the node's database connection works", registry=REGISTRY
)


def safe_label(value: str) -> str:
    """What of a third-party name may become a label value: at most MAX_LABEL_CHARS of letters,
    digits, '_', '-' and '.' (anything else becomes '_')."""
    return _UNSAFE.sub("_", value[:MAX_LABEL_CHARS]) or "_"


class PluginLabels:
    """The `plugin` label values of one node: the first `cap` distinct (safe) names keep their
    own, every later one is `OTHER_PLUGIN`. A name once admitted keeps its label for the life
    of the process (its counters cannot be taken back). Thread-safe."""

    def __init__(self, cap: int = MAX_PLUGIN_LABELS) -> None:
        self.cap = cap
        self._named: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, plugin: str) -> str:
        label = safe_label(plugin)
        with self._lock:
            if label in self._named:
                return label
            if len(self._named) < self.cap:
                self._named.add(label)
                return label
        return OTHER_PLUGIN

    def __len__(self) -> int:
        with self._lock:
            return len(self._named)


@dataclass(frozen=True)
class PluginConfigCount:
    """How many configs of one plugin are in each state (from the database)."""

    plugin: str
    enabled: int  # enabled and not quarantined: they run
    disabled: int  # disabled, not quarantined
    quarantined: int


CONFIG_STATES = ("enabled", "disabled", "quarantined")


class _ConfigsCollector(Collector):
    """`plugin_runtime_plugin_configs{plugin,state}`: the last counts from the database, replaced
    whole at each refresh (an uninstalled plugin disappears)."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "plugin_runtime_plugin_configs",
            "Configs of each plugin by state (enabled, disabled, quarantined), from the database",
            labels=["plugin", "state"],
        )
        for plugin, counts in sorted(self.counts.items()):
            for state in CONFIG_STATES:
                family.add_metric([plugin, state], counts.get(state, 0))
        yield family


class PluginMetrics:
    """The per-plugin metrics, all labelled through one `PluginLabels`."""

    def __init__(self, registry: CollectorRegistry, cap: int = MAX_PLUGIN_LABELS) -> None:
        self.labels = PluginLabels(cap)
        self.runs = Counter(
            "plugin_runtime_plugin_runs",
            "Finished runs by plugin, cadence and outcome",
            ["plugin", "cadence", "outcome"],
            registry=registry,
        )
        # Few buckets: a series each per plugin and cadence (the fleet-wide histograms above
        # have the fine ones).
        self.duration = Histogram(
            "plugin_runtime_plugin_run_duration_seconds",
            "Wall time of runs in the sandbox, by plugin and cadence",
            ["plugin", "cadence"],
            registry=registry,
            buckets=(0.05, 0.25, 1, 5, 15, 60, 300),
        )
        # The bounds include the runbook's lag thresholds (minute 180 s, hour 600 s, day 1800 s).
        self.start_lag = Histogram(
            "plugin_runtime_plugin_start_lag_seconds",
            "Start time minus (slot + spread offset), on-time first attempts, by plugin and cadence",
            ["plugin", "cadence"],
            registry=registry,
            buckets=(1, 10, 60, 180, 600, 1800),
        )
        self.named = Gauge(
            "plugin_runtime_plugin_labels",
            f"Plugins with a label of their own on this node (at most {cap}; "
            f'the others are plugin="{OTHER_PLUGIN}")',
            registry=registry,
        )
        self.configs = _ConfigsCollector()
        registry.register(self.configs)

    def _plugin(self, plugin: str) -> str:
        label = self.labels(plugin)
        self.named.set(len(self.labels))
        return label

    def started_series(self, plugin: str, cadence: str) -> Histogram:
        """The start-lag series of a plugin and cadence (admitting the plugin's label)."""
        return self.start_lag.labels(self._plugin(plugin), cadence)

    def finished_series(
        self, plugin: str, cadence: str, outcome: Outcome
    ) -> tuple[Counter, Histogram]:
        """The runs and run-time series of a plugin, cadence and outcome."""
        label = self._plugin(plugin)
        runs = self.runs.labels(label, cadence, outcome.value)
        return runs, self.duration.labels(label, cadence)

    def started(self, plugin: str, cadence: str, lag_s: float) -> None:
        self.started_series(plugin, cadence).observe(max(0.0, lag_s))

    def finished(self, plugin: str, cadence: str, outcome: Outcome, duration_s: float) -> None:
        runs, duration = self.finished_series(plugin, cadence, outcome)
        runs.inc()
        duration.observe(duration_s)

    def set_configs(self, counts: Iterable[PluginConfigCount]) -> None:
        """Replace the configs gauge with these counts (plugins beyond the cap add up in
        `_other`)."""
        merged: dict[str, dict[str, int]] = {}
        for row in counts:
            into = merged.setdefault(self._plugin(row.plugin), dict.fromkeys(CONFIG_STATES, 0))
            into["enabled"] += row.enabled
            into["disabled"] += row.disabled
            into["quarantined"] += row.quarantined
        self.configs.counts = merged


PLUGINS = PluginMetrics(REGISTRY)


# The series a run's start and end touch, looked up once per (plugin, cadence[, outcome]) and
# kept: `labels()` validates and locks on every call, which a node would pay several times per
# run. A plugin's label never changes once given (`PluginLabels`), so neither do its series.
# Bounded: cleared (and looked up again) past MAX_CACHED_SERIES keys.
MAX_CACHED_SERIES = 20_000
_StartSeries = tuple[Histogram, Histogram]
_FinishSeries = tuple[Counter, Histogram, Counter, Histogram, Counter | None]
_started_series: dict[tuple[str, str], _StartSeries] = {}
_finished_series: dict[tuple[str, str, Outcome], _FinishSeries] = {}


def _kept(cache: dict[Any, Any]) -> dict[Any, Any]:
    if len(cache) >= MAX_CACHED_SERIES:
        cache.clear()
    return cache


def run_started(plugin: str, cadence: str, lag_s: float) -> None:
    """An on-time first attempt started `lag_s` after its due time."""
    series = _started_series.get((plugin, cadence))
    if series is None:
        series = (START_LAG.labels(cadence), PLUGINS.started_series(plugin, cadence))
        _kept(_started_series)[(plugin, cadence)] = series
    lag = max(0.0, lag_s)
    series[0].observe(lag)
    series[1].observe(lag)


def run_finished(plugin: str, cadence: str, outcome: Outcome, duration_s: float) -> None:
    """A run ended in the sandbox."""
    key = (plugin, cadence, outcome)
    series = _finished_series.get(key)
    if series is None:
        plugin_runs, plugin_duration = PLUGINS.finished_series(plugin, cadence, outcome)
        series = (
            RUNS.labels(cadence, outcome.value),
            RUN_DURATION.labels(cadence),
            plugin_runs,
            plugin_duration,
            SANDBOX_KILLS.labels(outcome.value) if outcome.killed else None,
        )
        _kept(_finished_series)[key] = series
    runs, duration, plugin_runs, plugin_duration, kills = series
    runs.inc()
    duration.observe(duration_s)
    plugin_runs.inc()
    plugin_duration.observe(duration_s)
    if kills is not None:
        kills.inc()


def set_configs(counts: list[PluginConfigCount]) -> None:
    """The configs by plugin and state, as the database has them now."""
    QUARANTINED.set(sum(row.quarantined for row in counts))
    PLUGINS.set_configs(counts)
