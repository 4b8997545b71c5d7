"""pytest plugin for plugin authors (entry point `plugin_runtime`, loaded automatically once
plugin-runtime is installed). Runs a plugin's task in the real sandbox — a fresh jailed child,
restricted Python, real limits — and returns what happened:

    def test_counts(plugin_runner):
        result = plugin_runner.run("examples/minute_counter", storage={"count": 41})
        assert_ok(result)
        assert result.storage == {"count": 42}

    def test_imports(plugin_runner, fake_http):
        fake_http.add("GET", "https://api.example.com/items*", json={"items": [], "next_cursor": None})
        result = plugin_runner.run("my_plugin", "run_every_hour", config={"api_key": "k"}, http=fake_http)
        assert fake_http.calls[0].headers["X-Api-Key"] == "k"

See docs/testing.md.
"""

from __future__ import annotations

import fnmatch
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sandbox import (
    ErrorInfo,
    Limits,
    LogLine,
    Plugin,
    RunInfo,
    RunReport,
    RunRequest,
    Sandbox,
    load_plugin,
    resolve_limits,
)
from sandbox.protocol import CacheArgs, FetchArgs, FetchResponse
from sandbox.services import FetchRefused, IPNetwork, LocalServices, MemoryCache, parse_networks

__all__ = [
    "FakeHttp",
    "FetchCall",
    "PluginResult",
    "PluginRunner",
    "assert_ok",
    "assert_outcome",
]


@dataclass
class FetchCall:
    method: str
    url: str
    headers: dict[str, str]
    body: Any

    @property
    def query(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.url).query))


@dataclass
class _Route:
    method: str
    pattern: str
    respond: Callable[[FetchCall], dict[str, Any]]


class FakeHttp:
    """A fake HTTP responder for `meta.fetch`. Routes match on method and URL (`*` wildcards,
    query string included); the first match wins. A URL with no route answers 404. The plugin's
    `allowed_hosts` is still enforced, as in production."""

    def __init__(self) -> None:
        self.routes: list[_Route] = []
        self.calls: list[FetchCall] = []
        self._lock = threading.Lock()

    def add(
        self,
        method: str,
        url: str,
        *,
        status: int = 200,
        json: Any = None,
        body: str = "",
        headers: dict[str, str] | None = None,
        handler: Callable[[FetchCall], dict[str, Any]] | None = None,
    ) -> FakeHttp:
        """Answer `method url` with a status and a JSON or text body, or with `handler(call)`
        returning {"status", "body", "headers"}."""
        if handler is None:
            text = _json_dumps(json) if json is not None else body
            fixed: dict[str, Any] = {"status": status, "body": text, "headers": dict(headers or {})}
            if json is not None:
                fixed["headers"].setdefault("Content-Type", "application/json")

            def handler(_: FetchCall, fixed: dict[str, Any] = fixed) -> dict[str, Any]:
                return fixed

        self.routes.append(_Route(method.upper(), url, handler))
        return self

    def __call__(self, plugin: Plugin, args: FetchArgs) -> FetchResponse:
        url = args.url
        host = (urllib.parse.urlsplit(url).hostname or "").lower()
        if host not in plugin.manifest.allowed_hosts:
            raise FetchRefused(
                f"host {host!r} is not in the plugin's allowed_hosts "
                f"{list(plugin.manifest.allowed_hosts)}"
            )
        call = FetchCall(args.method.upper(), url, dict(args.headers), args.body)
        with self._lock:
            self.calls.append(call)
        for route in self.routes:
            if route.method == call.method and fnmatch.fnmatchcase(url, route.pattern):
                answer = route.respond(call)
                return FetchResponse(
                    status=int(answer.get("status", 200)),
                    body=str(answer.get("body", "")),
                    headers={str(k): str(v) for k, v in (answer.get("headers") or {}).items()},
                    url=url,
                )
        return FetchResponse(
            status=404, body=f"no fake response for {call.method} {url}", headers={}, url=url
        )


def _json_dumps(value: Any) -> str:
    return json.dumps(value)


class _KitServices:
    def __init__(
        self, http: FakeHttp | None, allow_private: bool, allow_networks: Sequence[IPNetwork] = ()
    ) -> None:
        self.http = http
        self.real = LocalServices(allow_private=allow_private, allow_networks=allow_networks)
        self.memory_cache = MemoryCache()

    def fetch(self, request: RunRequest, args: FetchArgs) -> FetchResponse:
        if self.http is not None:
            return self.http(request.plugin, args)
        return self.real.fetch(request, args)

    def cache(self, request: RunRequest, args: CacheArgs) -> Any:
        return self.memory_cache(request, args)


@dataclass
class PluginResult:
    """What a run did: its outcome, logs, storage before and after, fetch calls."""

    outcome: str
    result: Any
    error: ErrorInfo | None
    logs: list[LogLine]
    storage: dict[str, Any]  # after the run (unchanged unless it succeeded)
    storage_before: dict[str, Any]
    storage_writes: dict[str, Any]
    storage_deletes: list[str]
    fetch_calls: list[dict[str, Any]]
    duration_ms: float
    layers: dict[str, bool]
    raw: RunReport = field(repr=False)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def messages(self) -> list[str]:
        return [line.message for line in self.logs]

    def describe(self) -> str:
        lines = [f"outcome: {self.outcome} ({self.duration_ms:.0f} ms)"]
        if self.error is not None:
            lines.append(f"error: {self.error.type}: {self.error.message}")
            lines += [f"  {tb}" for tb in self.error.traceback]
        lines += [f"log {line.level}: {line.message}" for line in self.logs[-20:]]
        return "\n".join(lines)


class PluginRunner:
    """Runs plugin tasks in a real sandbox. Storage carries over between runs of one runner
    when you pass `storage=runner.storage` (or use `run(..., keep_storage=True)`)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.storage: dict[str, Any] = {}

    def run(
        self,
        plugin: str | Path | Plugin,
        task: str | None = None,
        *,
        config: dict[str, Any] | None = None,
        storage: dict[str, Any] | None = None,
        keep_storage: bool = False,
        timeout_s: float | None = None,
        cpu_s: float | None = None,
        memory_mb: int | None = None,
        http: FakeHttp | None = None,
        allow_private: bool = False,
        allow_networks: str | Sequence[str] = (),
        slot: str | None = None,
        attempt: int = 1,
        backfilled: bool = False,
        config_id: Any = "test",
    ) -> PluginResult:
        loaded = plugin if isinstance(plugin, Plugin) else load_plugin(plugin)
        tasks = loaded.tasks()
        if task is None:
            if len(tasks) != 1:
                raise ValueError(
                    f"plugin {loaded.name} has {len(tasks)} scheduled functions "
                    f"({', '.join(sorted(tasks)) or 'none'}): name the task"
                )
            task = next(iter(tasks))
        elif task not in tasks:
            raise ValueError(
                f"plugin {loaded.name} has no scheduled function {task!r} "
                f"(it has: {', '.join(sorted(tasks)) or 'none'})"
            )
        before = dict(self.storage if keep_storage and storage is None else storage or {})
        asked = Limits(
            timeout_s=timeout_s if timeout_s is not None else loaded.manifest.limits.timeout_s,
            cpu_s=cpu_s if cpu_s is not None else loaded.manifest.limits.cpu_s,
            memory_mb=memory_mb if memory_mb is not None else loaded.manifest.limits.memory_mb,
        )
        request = RunRequest(
            plugin=loaded,
            task=task,
            config=dict(config or {}),
            storage=before,
            limits=resolve_limits(asked),
            run=RunInfo(
                config_id=config_id, task=task, slot=slot, attempt=attempt, backfilled=backfilled
            ),
        )
        networks = parse_networks(
            allow_networks if isinstance(allow_networks, str) else ",".join(allow_networks)
        )
        services = _KitServices(http, allow_private, networks)
        outcome = self.sandbox.run(request, services)
        after = outcome.apply_to(before)
        if keep_storage:
            self.storage = after
        return PluginResult(
            outcome=outcome.outcome,
            result=outcome.result,
            error=outcome.error,
            logs=outcome.logs,
            storage=after,
            storage_before=before,
            storage_writes=outcome.storage_writes,
            storage_deletes=outcome.storage_deletes,
            fetch_calls=outcome.fetch_calls,
            duration_ms=outcome.duration_ms,
            layers=outcome.layers,
            raw=outcome,
        )


def assert_ok(result: PluginResult) -> None:
    """Fail with the run's error, traceback and last logs unless it succeeded."""
    __tracebackhide__ = True
    if not result.ok:
        pytest.fail(f"the plugin run did not succeed:\n{result.describe()}", pytrace=False)


def assert_outcome(result: PluginResult, expected: str) -> None:
    __tracebackhide__ = True
    if result.outcome != expected:
        pytest.fail(f"expected outcome {expected!r}:\n{result.describe()}", pytrace=False)


@pytest.fixture(scope="session")
def plugin_sandbox() -> Iterator[Sandbox]:
    """One warm sandbox (fork server) for the whole test session."""
    with Sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def plugin_runner(plugin_sandbox: Sandbox) -> PluginRunner:
    """Runs a plugin directory's task in the real sandbox: `plugin_runner.run(dir, task, ...)`."""
    return PluginRunner(plugin_sandbox)


@pytest.fixture
def fake_http() -> FakeHttp:
    """A fake HTTP responder to pass as `http=` to `plugin_runner.run`."""
    return FakeHttp()
