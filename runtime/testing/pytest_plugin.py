"""pytest plugin for plugin authors (registered as the `plugin_runtime` pytest11 entry point)."""
