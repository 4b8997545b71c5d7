"""The runbook's PromQL examples against what a node really exports (its /metrics text).

`runbook_queries` takes every expression of the ```promql blocks of a Markdown text (one per
line; `#` lines are comments); `problems` says what in one expression a node does not export:
a metric name no sample has, a label the metric does not carry (in a selector or in
`by (...)`/`without (...)`, which every metric of the expression must carry), a value of an
enumerated label (cadence, outcome, state, le) the node never uses.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from runtime.metrics import CADENCE_LABELS, CONFIG_STATES
from sandbox.outcome import Outcome

_BLOCK = re.compile(r"^```promql\n(.*?)^```", re.S | re.M)
_SELECTOR = re.compile(r"\b(?P<name>plugin_runtime_[a-z_]+)\b(?:\{(?P<matchers>[^}]*)\})?")
_MATCHER = re.compile(r'^\s*(?P<label>[a-zA-Z_]\w*)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>[^"]*)"\s*$')
_GROUPING = re.compile(r"\b(?:by|without)\s*\((?P<labels>[^)]*)\)")
# The values a label may take, for the labels whose values are a closed set.
ENUMERATED = {
    "cadence": set(CADENCE_LABELS),
    "outcome": {o.value for o in Outcome},
    "state": set(CONFIG_STATES),
}


@dataclass
class Exported:
    """Sample names of a scrape, with the labels (and their values) each carries."""

    labels: dict[str, dict[str, set[str]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Exported:
        labels: dict[str, dict[str, set[str]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                seen = labels.setdefault(sample.name, defaultdict(set))
                for key, value in sample.labels.items():
                    seen[key].add(value)
        return cls(labels)


def runbook_queries(markdown: str) -> list[str]:
    """Every expression in the ```promql blocks, in order."""
    return [
        line.strip()
        for block in _BLOCK.findall(markdown)
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def problems(expression: str, exported: Exported) -> list[str]:
    """What in `expression` the scrape does not have (empty: all of it is exported)."""
    found: list[str] = []
    names: list[str] = []
    for match in _SELECTOR.finditer(expression):
        name = match["name"]
        names.append(name)
        if name not in exported.labels:
            found.append(f"no sample named {name}")
            continue
        carried = exported.labels[name]
        for matcher in filter(str.strip, (match["matchers"] or "").split(",")):
            parsed = _MATCHER.match(matcher)
            if parsed is None:
                found.append(f"{name}: cannot read the matcher {matcher!r}")
                continue
            label, value = parsed["label"], parsed["value"]
            if label not in carried:
                found.append(f"{name} has no label {label}")
                continue
            if label == "le":
                allowed = carried["le"]
            elif label in ENUMERATED:
                allowed = ENUMERATED[label]
            else:
                continue
            values = value.split("|") if parsed["op"] in ("=~", "!~") else [value]
            found += [
                f"{name}: {label}={v!r} is never exported" for v in values if v not in allowed
            ]
    if not names:
        found.append("names no plugin_runtime_ metric")
    for grouping in _GROUPING.finditer(expression):
        for label in filter(None, (x.strip() for x in grouping["labels"].split(","))):
            found += [
                f"{name} has no label {label} (in {grouping.group(0)})"
                for name in names
                if name in exported.labels and label not in exported.labels[name]
            ]
    return found
