"""Plugin code as stored, parsed once per version (`plugins.updated_at`)."""

from __future__ import annotations

from datetime import datetime

from runtime.node.gateway import Gateway
from sandbox.manifest import Plugin, plugin_from_stored


class PluginCache:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._plugins: dict[int, tuple[datetime, Plugin]] = {}

    def get(self, plugin_id: int, updated_at: datetime) -> Plugin | None:
        """The plugin at version `updated_at` or newer; None when it is gone. ManifestError when
        the stored plugin cannot be loaded."""
        cached = self._plugins.get(plugin_id)
        if cached is not None and cached[0] == updated_at:
            return cached[1]
        code = self.gateway.plugin_code(plugin_id)
        if code is None:
            return None
        plugin = plugin_from_stored(code.manifest, code.source)
        self._plugins[plugin_id] = (code.updated_at, plugin)
        return plugin
