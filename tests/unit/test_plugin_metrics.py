"""The per-plugin metrics: the cap on plugin label values (500 per node, then `_other`), what of
a hostile plugin name reaches a label, the configs gauge, and the runbook's PromQL checker."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from promql import Exported, problems, runbook_queries

from runtime import metrics
from runtime.metrics import (
    MAX_LABEL_CHARS,
    MAX_PLUGIN_LABELS,
    OTHER_PLUGIN,
    PluginConfigCount,
    PluginMetrics,
    safe_label,
)
from sandbox.outcome import Outcome


def _series(registry: CollectorRegistry) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample.labels)
    return out


def test_the_node_caps_plugin_labels_at_500_and_reports_the_rest_as_other() -> None:
    assert metrics.PLUGINS.labels.cap == MAX_PLUGIN_LABELS == 500  # the node's own instance
    registry = CollectorRegistry()
    plugin_metrics = PluginMetrics(registry)
    names = [f"plugin-{i:04d}" for i in range(700)]
    for name in names:
        plugin_metrics.started(name, "minute", 0.5)
        plugin_metrics.finished(name, "minute", Outcome.OK, 0.1)
        plugin_metrics.finished(name, "hour", Outcome.ERROR, 0.2)
    plugin_metrics.set_configs(PluginConfigCount(name, 2, 1, 1) for name in names)

    series = _series(registry)
    runs = series["plugin_runtime_plugin_runs_total"]
    plugins = {labels["plugin"] for labels in runs}
    assert plugins == set(names[:500]) | {OTHER_PLUGIN}
    assert len(runs) == 501 * 2  # (plugin, cadence, outcome): two per plugin label
    for name in (
        "plugin_runtime_plugin_run_duration_seconds_count",
        "plugin_runtime_plugin_start_lag_seconds_count",
        "plugin_runtime_plugin_configs",
    ):
        assert len({labels["plugin"] for labels in series[name]}) == 501, name
    # What the 200 plugins beyond the cap did adds up under _other.
    other = {
        (s["cadence"], s["outcome"])
        for s in runs
        if s["plugin"] == OTHER_PLUGIN  # one series per cadence and outcome
    }
    assert other == {("minute", "ok"), ("hour", "error")}
    text = generate_latest(registry).decode()
    assert (
        'plugin_runtime_plugin_runs_total{cadence="minute",outcome="ok",plugin="_other"} 200.0'
        in text
    )
    assert 'plugin_runtime_plugin_configs{plugin="_other",state="enabled"} 400.0' in text
    assert "plugin_runtime_plugin_labels 500.0" in text
    # A plugin admitted before the cap keeps its label; a new one still goes to _other.
    assert plugin_metrics.labels("plugin-0001") == "plugin-0001"
    assert plugin_metrics.labels("plugin-9999") == OTHER_PLUGIN


def test_a_hostile_plugin_name_becomes_a_short_safe_label() -> None:
    hostile = 'evil"} 1\n# TYPE x counter\nx{a="' + "z" * 5000
    label = safe_label(hostile)
    assert len(label) <= MAX_LABEL_CHARS
    assert set(label) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
    assert safe_label("") == "_" and safe_label("hello_world-1.2") == "hello_world-1.2"
    registry = CollectorRegistry()
    plugin_metrics = PluginMetrics(registry)
    plugin_metrics.finished(hostile, "cron", Outcome.TIMEOUT, 1.0)
    plugin_metrics.set_configs([PluginConfigCount(hostile, 1, 0, 0)])
    series = _series(registry)  # the text parses: nothing was injected
    assert {s["plugin"] for s in series["plugin_runtime_plugin_runs_total"]} == {label}
    assert "x" not in series and "# TYPE x" not in generate_latest(registry).decode()


def test_the_configs_gauge_is_replaced_whole_at_each_refresh() -> None:
    registry = CollectorRegistry()
    plugin_metrics = PluginMetrics(registry)
    plugin_metrics.set_configs([PluginConfigCount("a", 1, 0, 0), PluginConfigCount("b", 0, 1, 2)])
    assert len(_series(registry)["plugin_runtime_plugin_configs"]) == 6  # 2 plugins x 3 states
    plugin_metrics.set_configs([PluginConfigCount("b", 0, 0, 3)])  # `a` was uninstalled
    rows = _series(registry)["plugin_runtime_plugin_configs"]
    assert {r["plugin"] for r in rows} == {"b"}


SCRAPE = """\
# TYPE plugin_runtime_runs counter
plugin_runtime_runs_total{cadence="minute",outcome="ok"} 3.0
# TYPE plugin_runtime_plugin_start_lag_seconds histogram
plugin_runtime_plugin_start_lag_seconds_bucket{cadence="minute",le="180.0",plugin="tiny"} 1.0
plugin_runtime_plugin_start_lag_seconds_count{cadence="minute",plugin="tiny"} 1.0
"""


def test_the_promql_checker_finds_what_a_node_does_not_export() -> None:
    exported = Exported.parse(SCRAPE)
    assert problems("sum by (cadence) (rate(plugin_runtime_runs_total[5m]))", exported) == []
    assert (
        problems(
            'sum by (plugin) (rate(plugin_runtime_plugin_start_lag_seconds_bucket{le="180.0"}[5m]))',
            exported,
        )
        == []
    )
    assert problems("rate(plugin_runtime_runs[5m])", exported) == [
        "no sample named plugin_runtime_runs"
    ]
    assert problems("sum by (plugin) (rate(plugin_runtime_runs_total[5m]))", exported) == [
        "plugin_runtime_runs_total has no label plugin (in by (plugin))"
    ]
    assert problems('plugin_runtime_runs_total{cadence="hourly"}', exported) == [
        "plugin_runtime_runs_total: cadence='hourly' is never exported"
    ]
    assert problems('plugin_runtime_runs_total{outcome=~"error|failed"}', exported) == [
        "plugin_runtime_runs_total: outcome='failed' is never exported"
    ]
    assert problems('plugin_runtime_plugin_start_lag_seconds_bucket{le="180"}', exported) == [
        "plugin_runtime_plugin_start_lag_seconds_bucket: le='180' is never exported"
    ]
    assert problems('plugin_runtime_runs_total{node="a"}', exported) == [
        "plugin_runtime_runs_total has no label node"
    ]
    markdown = "x\n```promql\n# a comment\nup\n\nrate(a[5m])\n```\n```sql\nSELECT 1\n```\n"
    assert runbook_queries(markdown) == ["up", "rate(a[5m])"]
