"""Run one plugin function in a jailed child process. Knows nothing of any database.

    with Sandbox() as sb:
        outcome = sb.run(RunRequest(plugin=load_plugin("examples/counter"), task="run_every_minute"))

`Sandbox` starts a warm fork server (a small single-threaded process that has the runtime and
each plugin's compiled code ready) and forks one fresh, jailed child per run. `run` is
thread-safe: call it from as many threads as runs you want at once.
"""

from sandbox.client import MetaServices, Sandbox, SandboxError, run_once
from sandbox.manifest import Limits, ManifestError, Plugin, load_plugin
from sandbox.outcome import (
    DEFAULT_LIMITS,
    OUTCOMES,
    ErrorInfo,
    LogLine,
    Outcome,
    RunInfo,
    RunRequest,
    resolve_limits,
)

__all__ = [
    "DEFAULT_LIMITS",
    "OUTCOMES",
    "ErrorInfo",
    "Limits",
    "LogLine",
    "ManifestError",
    "MetaServices",
    "Outcome",
    "Plugin",
    "RunInfo",
    "RunRequest",
    "Sandbox",
    "SandboxError",
    "load_plugin",
    "resolve_limits",
    "run_once",
]
