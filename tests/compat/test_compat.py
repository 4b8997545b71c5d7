"""Compatibility suite: realistic plugins, written the way people write Python, run in the real
sandbox and compared with what plain CPython returns for the same code and the same inputs.

Each file in `plugins/` is a plugin's main.py. Its first line may be a `# compat: {...}` JSON
header with the run's inputs: `config`, `storage`, `fetch` (URL -> canned response: `status`,
`headers`, `body` or `json`), `task` (default `run_every_minute`), `allowed_hosts`. The same
inputs feed a plain-Python `meta` (below) and the sandbox's. A plugin "runs unchanged" when the
sandboxed run succeeds with the same result, storage writes and log lines as CPython.

One Sandbox (the shared `sandbox` fixture: one warm fork server) serves the whole suite; it
takes a few seconds.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sandbox import RunInfo, RunReport, RunRequest, Sandbox
from sandbox.manifest import Limits, Manifest, Plugin, parse_manifest
from sandbox.protocol import CacheArgs, FetchArgs, FetchResponse
from sandbox.services import MemoryCache

PLUGINS = Path(__file__).parent / "plugins"
LIMITS = Limits(timeout_s=20.0, cpu_s=10.0, memory_mb=256)
RUN = {
    "config_id": 7,
    "task": "run_every_minute",
    "slot": "2024-03-01T12:00:00+00:00",
    "attempt": 1,
    "backfilled": False,
    "deadline": "2024-03-01T12:00:30+00:00",
}

# Plugins that do not run unchanged, with the reason (documented in docs/plugins.md). Counted in
# the published figure as not running unchanged; their test checks that they still do not (so a
# change that makes one work fails here until the list and the figure are updated).
KNOWN_DIFFERENCES: dict[str, str] = {
    "match_statement_router": "'match' is refused: class patterns read attributes unguarded",
}


@dataclass
class Case:
    name: str
    source: str
    task: str = "run_every_minute"
    config: dict[str, Any] = field(default_factory=dict)
    storage: dict[str, Any] = field(default_factory=dict)
    fetch: dict[str, Any] = field(default_factory=dict)
    allowed_hosts: list[str] = field(default_factory=list)


def load_case(path: Path) -> Case:
    source = path.read_text(encoding="utf-8")
    first = source.splitlines()[0] if source else ""
    header: dict[str, Any] = {}
    if first.startswith("# compat:"):
        header = json.loads(first.removeprefix("# compat:"))
    return Case(name=path.stem, source=source, **header)


CASES = sorted(PLUGINS.glob("*.py"))


@dataclass
class Observed:
    """What a run produced, in JSON terms (so CPython's and the sandbox's compare alike)."""

    ok: bool
    result: Any
    writes: dict[str, Any]
    deletes: list[str]
    logs: list[tuple[str, str]]
    error: str | None = None


def _canned(case: Case, url: str, method: str) -> FetchResponse:
    spec = case.fetch.get(url) or case.fetch.get(f"{method} {url}")
    if spec is None:
        return FetchResponse(status=404, headers={}, body="not found", url=url)
    text = json.dumps(spec["json"]) if "json" in spec else spec.get("body", "")
    return FetchResponse(
        status=spec.get("status", 200), headers=spec.get("headers", {}), body=text, url=url
    )


# -- plain CPython ------------------------------------------------------------------------------


class FetchError(Exception):
    pass


class PlainHeaders(dict):  # type: ignore[type-arg]
    """The documented contract: header names are looked up without regard to case."""

    def __getitem__(self, key: str) -> str:
        for name, value in self.items():
            if name.lower() == key.lower():
                return str(value)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and any(name.lower() == key.lower() for name in self)


class PlainResponse:
    def __init__(self, data: FetchResponse) -> None:
        self.status = data.status
        self.headers = PlainHeaders(data.headers)
        self.text = data.body
        self.url = data.url

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.text)


class PlainStorage:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = dict(data)
        self.writes: dict[str, Any] = {}
        self.deletes: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        json.dumps(value)
        self.data[key] = self.writes[key] = value
        self.deletes.discard(key)

    def delete(self, key: str) -> None:
        self.data.pop(key, None)
        self.writes.pop(key, None)
        self.deletes.add(key)


class PlainCache:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any, ttl_s: float = 60) -> None:
        self.data[key] = value

    def incr(self, key: str, by: int = 1, ttl_s: float = 60) -> int:
        self.data[key] = int(self.data.get(key, 0)) + by
        return int(self.data[key])

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class PlainLogger:
    def __init__(self, lines: list[tuple[str, str]]) -> None:
        self.lines = lines

    def _emit(self, level: str, args: tuple[Any, ...]) -> None:
        # The documented contract: %-style like `logging`, else the arguments joined by spaces.
        text = " ".join(str(a) for a in args)
        if len(args) > 1 and isinstance(args[0], str) and "%" in args[0]:
            params: Any = args[1:]
            if len(params) == 1 and isinstance(params[0], dict) and params[0]:
                params = params[0]
            with contextlib.suppress(TypeError, ValueError, KeyError):
                text = args[0] % params
        self.lines.append((level, text))

    def debug(self, *args: Any) -> None:
        self._emit("debug", args)

    def info(self, *args: Any) -> None:
        self._emit("info", args)

    def warning(self, *args: Any) -> None:
        self._emit("warning", args)

    def error(self, *args: Any) -> None:
        self._emit("error", args)


class PlainMeta:
    def __init__(self, case: Case, logs: list[tuple[str, str]]) -> None:
        self.config = types.MappingProxyType(dict(case.config))
        self.storage = PlainStorage(case.storage)
        self.cache = PlainCache()
        self.logger = PlainLogger(logs)
        self.run = types.SimpleNamespace(**RUN)
        self.case = case

    def fetch(
        self,
        url: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: Any = None,
        timeout_s: float = 10.0,
    ) -> PlainResponse:
        host = url.split("/")[2] if "://" in url else ""
        if host not in self.case.allowed_hosts:
            raise FetchError(f"host {host!r} is not in allowed_hosts")
        return PlainResponse(_canned(self.case, url, method.upper()))


def run_cpython(case: Case) -> Observed:
    """The plugin as plain Python: its own module (registered, as an import would), real
    builtins, print() captured as info log lines."""
    stub = types.ModuleType("plugin_runtime")
    stub.FetchError = FetchError  # type: ignore[attr-defined]
    stub.SecurityError = type("SecurityError", (Exception,), {})  # type: ignore[attr-defined]
    name = f"compat_{case.name}"
    module = types.ModuleType(name)
    logs: list[tuple[str, str]] = []
    meta = PlainMeta(case, logs)
    saved = sys.modules.get("plugin_runtime")
    sys.modules["plugin_runtime"], sys.modules[name] = stub, module
    out = io.StringIO()
    try:
        code = compile(case.source, "main.py", "exec", dont_inherit=True)
        with contextlib.redirect_stdout(out):
            exec(code, module.__dict__)
            result = module.__dict__[case.task](meta)
        ok, error = True, None
    except Exception as exc:  # noqa: BLE001 - the plugin's own failure is an observation
        ok, result, error = False, None, f"{type(exc).__name__}: {exc}"
    finally:
        sys.modules.pop(name, None)
        if saved is None:
            sys.modules.pop("plugin_runtime", None)
        else:
            sys.modules["plugin_runtime"] = saved
    printed = [("info", line) for line in out.getvalue().splitlines()]
    # print() and meta.logger interleave in the sandbox; here they are captured apart, so the
    # comparison sorts both.
    return Observed(
        ok=ok,
        result=json.loads(json.dumps(result)) if ok else None,
        writes=json.loads(json.dumps(meta.storage.writes)) if ok else {},
        deletes=sorted(meta.storage.deletes) if ok else [],
        logs=sorted(logs + printed),
        error=error,
    )


# -- the sandbox --------------------------------------------------------------------------------


class CannedServices:
    """meta.fetch answered from the case's canned responses; meta.cache in memory."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.memory_cache = MemoryCache()

    def fetch(self, request: RunRequest, args: FetchArgs) -> FetchResponse:
        host = args.url.split("/")[2] if "://" in args.url else ""
        if host not in self.case.allowed_hosts:
            raise ValueError(f"host {host!r} is not in allowed_hosts")
        return _canned(self.case, args.url, args.method)

    def cache(self, request: RunRequest, args: CacheArgs) -> Any:
        return self.memory_cache(request, args)


def run_sandboxed(sandbox: Sandbox, case: Case) -> tuple[Observed, RunReport]:
    manifest: Manifest = parse_manifest(
        {"name": f"compat_{case.name}", "allowed_hosts": case.allowed_hosts}
    )
    request = RunRequest(
        plugin=Plugin(manifest=manifest, source=case.source),
        task=case.task,
        config=case.config,
        storage=case.storage,
        limits=LIMITS,
        run=RunInfo(**{k: v for k, v in RUN.items() if k in RunInfo.__dataclass_fields__}),
    )
    outcome = sandbox.run(request, CannedServices(case))
    ok = outcome.outcome == "ok"
    observed = Observed(
        ok=ok,
        result=outcome.result if ok else None,
        writes=dict(outcome.storage_writes) if ok else {},
        deletes=sorted(outcome.storage_deletes) if ok else [],
        logs=sorted((line.level, line.message) for line in outcome.logs),
        error=None if ok else f"{outcome.outcome}: {outcome.error}",
    )
    return observed, outcome


def test_there_are_at_least_sixty_plugins() -> None:
    assert len(CASES) >= 60


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_plugin_runs_unchanged(sandbox: Sandbox, path: Path) -> None:
    case = load_case(path)
    expected = run_cpython(case)
    assert expected.ok, f"the plugin fails under plain CPython too: {expected.error}"
    observed, outcome = run_sandboxed(sandbox, case)
    if case.name in KNOWN_DIFFERENCES:
        assert outcome.outcome == "bad_plugin", outcome
        assert outcome.error is not None and "line" in outcome.error.message
        return
    assert observed.ok, f"{case.name}: {observed.error}"
    assert observed == expected


def test_published_figure_matches_the_suite() -> None:
    """docs/plugins.md publishes how many of these plugins run unchanged."""
    docs = (Path(__file__).parents[2] / "docs" / "plugins.md").read_text(encoding="utf-8")
    unchanged = len(CASES) - len(KNOWN_DIFFERENCES)
    assert f"**{unchanged} of {len(CASES)}**" in docs
