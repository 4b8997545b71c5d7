"""Quarantine and release are logged by the node that sees them.

A config is quarantined by the statement that records its N-th failure in a row, and released by
`configs enable`, the status page, or an `UPDATE ... SET quarantined_at = NULL` typed in psql.
Each of these changes `quarantined_at`, which NOTIFYs every node; on each batch of config
notifications a node reads the set of quarantined configs (one short statement) and logs what
changed since it last looked: a WARNING naming the config, the reason and the commands to look
and to act, or an INFO line for a release. The first read after start only sets the baseline.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger("plugin_runtime.quarantine")


class QuarantineWatch:
    def __init__(self) -> None:
        self._known: dict[int, str] | None = None  # config id -> reason; None: no baseline yet

    def observe(
        self, quarantined: Iterable[Mapping[str, Any]], enabled: Mapping[int, bool]
    ) -> list[str]:
        """Compare the quarantined configs now (`quarantined`: rows with id and
        quarantine_reason) with the last look, log the changes, and return what was logged.
        `enabled`: whether released configs are enabled now (missing: deleted)."""
        now = {int(r["id"]): str(r.get("quarantine_reason") or "") for r in quarantined}
        before, self._known = self._known, now
        if before is None:
            return []
        said = []
        for config_id in sorted(now.keys() - before.keys()):
            message = (
                f"config {config_id} quarantined: {now[config_id] or 'no reason given'}; "
                f"look: plugin-runtime runs --config {config_id}; "
                f"release once fixed: plugin-runtime configs enable {config_id}"
            )
            log.warning(message, extra={"config_id": config_id})
            said.append(message)
        for config_id in sorted(before.keys() - now.keys()):
            state = enabled.get(config_id)
            how = "deleted" if state is None else ("enabled" if state else "still disabled")
            message = f"config {config_id} released from quarantine ({how})"
            log.info(message, extra={"config_id": config_id})
            said.append(message)
        return said

    def released(self, quarantined: Iterable[Mapping[str, Any]]) -> list[int]:
        """Configs that the last look knew as quarantined and that are not in `quarantined`."""
        if self._known is None:
            return []
        return sorted(self._known.keys() - {int(r["id"]) for r in quarantined})

    def forget(self) -> None:
        """Drop the baseline (e.g. after losing the database: the next look sets it again)."""
        self._known = None
