"""Run one plugin function in a jailed child process. Knows nothing of any database.

    with Sandbox() as sb:
        outcome = sb.run(RunRequest(plugin=load_plugin("examples/minute_counter"), task="run_every_minute"))

`Sandbox` starts a warm fork server (a small single-threaded process that has the runtime and
each plugin's compiled code ready) and forks one fresh, jailed child per run. `run` is
thread-safe: call it from as many threads as runs you want at once.

Names are imported lazily, so that the fork server (which imports `sandbox.forkserver`) carries
only what a child needs: every page it maps is copied into the page tables of every fork.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "MetaServices": "sandbox.client",
    "Sandbox": "sandbox.client",
    "SandboxError": "sandbox.client",
    "run_once": "sandbox.client",
    "Limits": "sandbox.manifest",
    "ManifestError": "sandbox.manifest",
    "Plugin": "sandbox.manifest",
    "load_plugin": "sandbox.manifest",
    "DEFAULT_LIMITS": "sandbox.outcome",
    "SANDBOX_OUTCOMES": "sandbox.outcome",
    "ErrorInfo": "sandbox.outcome",
    "LogLine": "sandbox.outcome",
    "Outcome": "sandbox.outcome",
    "RunReport": "sandbox.outcome",
    "RunInfo": "sandbox.outcome",
    "RunRequest": "sandbox.outcome",
    "resolve_limits": "sandbox.outcome",
}

__all__ = [
    "DEFAULT_LIMITS",
    "ErrorInfo",
    "Limits",
    "LogLine",
    "ManifestError",
    "MetaServices",
    "SANDBOX_OUTCOMES",
    "Outcome",
    "Plugin",
    "RunInfo",
    "RunReport",
    "RunRequest",
    "Sandbox",
    "SandboxError",
    "load_plugin",
    "resolve_limits",
    "run_once",
]

if TYPE_CHECKING:
    from sandbox.client import MetaServices, Sandbox, SandboxError, run_once
    from sandbox.manifest import Limits, ManifestError, Plugin, load_plugin
    from sandbox.outcome import (
        DEFAULT_LIMITS,
        SANDBOX_OUTCOMES,
        ErrorInfo,
        LogLine,
        Outcome,
        RunInfo,
        RunReport,
        RunRequest,
        resolve_limits,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
