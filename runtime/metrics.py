"""Prometheus metrics of a node (every name prefixed `plugin_runtime_`), served on `--http`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

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
