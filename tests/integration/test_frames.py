"""Frames from a child are untrusted input. A child that escaped restricted Python (here: the
test-only unrestricted mode, so it can write any bytes to its run socket) ends *its* run with a
failure outcome and a reason; the fork server, the sandbox's I/O thread and every other run go
on. Real fork server, real jailed children."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import wait
from typing import Any

import pytest

from sandbox import Plugin, RunInfo, RunReport, RunRequest, Sandbox, limits, load_plugin
from sandbox.manifest import Limits
from sandbox.protocol import CacheArgs, FetchArgs, FetchResponse

LIMITS = Limits(timeout_s=10.0, cpu_s=5.0, memory_mb=256)

# Every payload gets `raw(bytes)` and `frame(obj)`: write straight to the run socket.
PRELUDE = f"""
import json, os, socket, struct, time
IN_FLIGHT = {limits.MAX_CALLS_IN_FLIGHT_PER_RUN}
def raw(meta, data):
    meta._channel.sock.sendall(data)
def enc(obj):
    body = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
    return struct.pack(">I", len(body)) + body
def frame(meta, obj):
    raw(meta, enc(obj))
"""


@pytest.fixture(scope="module")
def sandbox(start_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return start_sandbox(allow_unrestricted=True)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Plugin:
    directory = tmp_path_factory.mktemp("plugin")
    (directory / "plugin.json").write_text(
        json.dumps({"name": "framer", "main": "main.py", "allowed_hosts": ["api.test"]})
    )
    (directory / "main.py").write_text("def run_every_minute(meta):\n    return 'honest'\n")
    return load_plugin(directory)


def hostile(sb: Sandbox, plugin: Plugin, body: str, **kwargs: Any) -> RunReport:
    request = RunRequest(
        plugin=plugin,
        task="run_every_minute",
        limits=LIMITS,
        unrestricted_source=PRELUDE + textwrap.dedent(body),
        **kwargs,
    )
    return sb.run(request)


def assert_next_run_ok(sb: Sandbox, plugin: Plugin, fork_server: int | None) -> None:
    outcome = sb.run(RunRequest(plugin=plugin, task="run_every_minute", limits=LIMITS))
    assert outcome.outcome == "ok" and outcome.result == "honest", outcome
    assert sb.fork_server_pid == fork_server


MALFORMED = {
    "not-json": 'frame(meta, b"{nope")',
    "invalid-utf8": 'frame(meta, b"\\xff\\xfe")',
    "not-an-object": "frame(meta, [1, 2])",
    "deep-json": 'frame(meta, b"[" * 50000 + b"]" * 50000)',
    "nan": 'frame(meta, b\'{"t": "result", "status": "ok", "result": NaN, "writes": {}, "deletes": []}\')',
    "huge-float": 'frame(meta, b\'{"t": "result", "status": "ok", "result": 1e999, "writes": {}, "deletes": []}\')',
    "5000-digit-int": 'frame(meta, b\'{"t": "result", "status": "ok", "result": \' + b"9" * 5000 + b\', "writes": {}, "deletes": []}\')',
    "unknown-type": 'frame(meta, {"t": "pwn"})',
    "missing-t": 'frame(meta, {"level": "info"})',
    "log-level-int": 'frame(meta, {"t": "log", "level": 1, "message": "x"})',
    "log-level-unknown": 'frame(meta, {"t": "log", "level": "critical!", "message": "x"})',
    "log-message-list": 'frame(meta, {"t": "log", "level": "info", "message": ["x"]})',
    "log-extra-field": 'frame(meta, {"t": "log", "level": "info", "message": "x", "y": 1})',
    "call-unknown-op": 'frame(meta, {"t": "call", "call": 1, "op": "exec", "args": {}})',
    "call-id-string": 'frame(meta, {"t": "call", "call": "1", "op": "cache", "args": {"action": "get", "key": "k"}})',
    "call-args-list": 'frame(meta, {"t": "call", "call": 1, "op": "fetch", "args": []})',
    "fetch-url-int": 'frame(meta, {"t": "call", "call": 1, "op": "fetch", "args": {"url": 5}})',
    "fetch-headers-int-values": 'frame(meta, {"t": "call", "call": 1, "op": "fetch", "args": {"url": "https://api.test/", "headers": {"a": 1}}})',
    "fetch-timeout-string": 'frame(meta, {"t": "call", "call": 1, "op": "fetch", "args": {"url": "https://api.test/", "timeout_s": "9"}})',
    "cache-unknown-action": 'frame(meta, {"t": "call", "call": 1, "op": "cache", "args": {"action": "flush", "key": "k"}})',
    "cache-incr-float": 'frame(meta, {"t": "call", "call": 1, "op": "cache", "args": {"action": "incr", "key": "k", "value": 1.5}})',
    "result-unknown-status": 'frame(meta, {"t": "result", "status": "great"})',
    "result-writes-list": 'frame(meta, {"t": "result", "status": "ok", "result": 1, "writes": [], "deletes": []})',
    "result-deletes-ints": 'frame(meta, {"t": "result", "status": "ok", "result": 1, "writes": {}, "deletes": [1]})',
    "result-nul-in-storage": 'frame(meta, {"t": "result", "status": "ok", "result": 1, "writes": {"k": "a\\u0000b"}, "deletes": []})',
    "result-surrogate-in-result": 'frame(meta, b\'{"t": "result", "status": "ok", "result": "\\\\ud800", "writes": {}, "deletes": []}\')',
    "result-error-not-object": 'frame(meta, {"t": "result", "status": "error", "error": "boom"})',
    "result-traceback-ints": 'frame(meta, {"t": "result", "status": "error", "error": {"type": "E", "message": "m", "traceback": [1]}})',
    "truncated-after-result": 'frame(meta, {"t": "result", "status": "ok", "result": 1, "writes": {}, "deletes": []}); raw(meta, b"\\x00\\x00"); os._exit(0)',
    "frame-after-result": 'frame(meta, {"t": "result", "status": "ok", "result": 1, "writes": {}, "deletes": []}); frame(meta, {"t": "log", "level": "info", "message": "late"})',
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_frame_ends_that_run_as_crashed(
    sandbox: Sandbox, plugin: Plugin, name: str
) -> None:
    fork_server = sandbox.fork_server_pid
    outcome = hostile(
        sandbox,
        plugin,
        f"""
        def run_every_minute(meta):
            {MALFORMED[name]}
            time.sleep(5)
            return "should not count"
        """,
    )
    assert outcome.outcome == "crashed", outcome
    assert outcome.error is not None and outcome.error.type == "ProtocolError", outcome.error
    assert "malformed frame" in outcome.error.message
    assert outcome.duration_ms < 4000, "the parent must kill the run, not wait for it"
    assert outcome.result is None and not outcome.storage_writes
    assert_next_run_ok(sandbox, plugin, fork_server)


SIZE = {
    "declared-2GiB": 'raw(meta, struct.pack(">I", 2 ** 31) + b"{" * 1024)',
    "declared-just-over": f'raw(meta, struct.pack(">I", {limits.MAX_CHILD_FRAME_BYTES + 1}))',
    "result-over-cap": f'frame(meta, {{"t": "result", "status": "ok", "result": "x" * {limits.MAX_RESULT_BYTES}, "writes": {{}}, "deletes": []}})',
    "storage-value-over-cap": f'frame(meta, {{"t": "result", "status": "ok", "result": 1, "writes": {{"k": "x" * {limits.MAX_STORAGE_VALUE_BYTES}}}, "deletes": []}})',
    "storage-keys-over-cap": f'frame(meta, {{"t": "result", "status": "ok", "result": 1, "writes": {{}}, "deletes": [str(i) for i in range({limits.MAX_STORAGE_KEYS_PER_RUN + 1})]}})',
    "log-lines-bypassing-the-child-count": f'[frame(meta, {{"t": "log", "level": "info", "message": "x"}}) for _ in range({limits.MAX_LOG_LINES + 5})]',
    "log-bytes": f'[frame(meta, {{"t": "log", "level": "info", "message": "x" * {limits.MAX_LOG_LINE}}}) for _ in range({limits.MAX_LOG_BYTES // limits.MAX_LOG_LINE + 2})]',
    "received-bytes": 'big = {"t": "log", "level": "info", "message": "x" * (6 * 1024 * 1024)}\n'
    "            [frame(meta, big) for _ in range(3)]",
    "child-resets-its-own-counter": f"""
    for _ in range({limits.MAX_LOG_LINES + 5}):
                meta._channel.log_lines = 0
                meta.logger.info("again")""".strip(),
}


@pytest.mark.parametrize("name", sorted(SIZE))
def test_sizes_are_capped_by_the_parent(sandbox: Sandbox, plugin: Plugin, name: str) -> None:
    fork_server = sandbox.fork_server_pid
    outcome = hostile(
        sandbox,
        plugin,
        f"""
        def run_every_minute(meta):
            {SIZE[name]}
            time.sleep(5)
            return "should not count"
        """,
    )
    assert outcome.outcome == "output_limit", outcome
    assert outcome.error is not None and outcome.error.type == "OutputLimit"
    assert len(outcome.logs) <= limits.MAX_LOG_LINES
    assert sum(len(line.message.encode()) for line in outcome.logs) <= limits.MAX_LOG_BYTES
    assert outcome.result is None
    assert_next_run_ok(sandbox, plugin, fork_server)


def test_text_is_cleaned_and_cut_not_trusted(sandbox: Sandbox, plugin: Plugin) -> None:
    """Lone surrogates in a log line or an error become U+FFFD; an over-long line or error is
    cut: what the sandbox hands over can always be encoded and stored."""
    outcome = hostile(
        sandbox,
        plugin,
        """
        def run_every_minute(meta):
            frame(meta, b'{"t": "log", "level": "info", "message": "a\\\\ud800b"}')
            frame(meta, {"t": "log", "level": "info", "message": "y" * 100000})
            frame(meta, {"t": "result", "status": "error", "error": {
                "type": "E" * 10000, "message": "m" * 100000, "traceback": ["t" * 5000] * 500}})
            os._exit(0)  # its own result frame would come after this one
        """,
    )
    assert outcome.outcome == "error", outcome
    assert outcome.logs[0].message == "a\ufffdb"
    assert len(outcome.logs[1].message) == limits.MAX_LOG_LINE
    assert outcome.error is not None
    assert len(outcome.error.type) <= limits.MAX_ERROR_TYPE
    assert len(outcome.error.message) <= limits.MAX_ERROR_MESSAGE
    assert len(outcome.error.traceback) <= limits.MAX_TRACEBACK_LINES
    assert all(len(line) <= limits.MAX_TRACEBACK_LINE for line in outcome.error.traceback)
    json.dumps(outcome.to_json(), allow_nan=False).encode("utf-8")


def test_an_honest_plugin_meets_the_same_caps_with_clear_errors(
    sandbox: Sandbox, plugin: Plugin
) -> None:
    """The child's own checks say the same as the parent's, early and at the line."""
    outcome = hostile(
        sandbox,
        plugin,
        """
        def run_every_minute(meta):
            out = {}
            for name, fn in {
                "nan-result-storage": lambda: meta.storage.set("k", float("nan")),
                "surrogate-storage": lambda: meta.storage.set("k", "\\ud800"),
                "deep-storage": lambda: meta.storage.set("k", eval("[" * 150 + "]" * 150)),
                "nul-key": lambda: meta.storage.set("a\\x00", 1),
                "long-key": lambda: meta.storage.set("k" * 5000, 1),
                "big-cache": lambda: meta.cache.set("k", "x" * 100000),
            }.items():
                try:
                    fn()
                    out[name] = "accepted"
                except (TypeError, ValueError) as exc:
                    out[name] = "refused " + str(exc)
            return out
        """,
    )
    assert outcome.outcome == "ok", outcome
    assert all(v.startswith("refused") for v in outcome.result.values()), outcome.result
    assert "nested deeper" in outcome.result["deep-storage"]
    for result, expected in [
        ("[float('nan')]", "error"),
        ("eval('[' * 10000 + ']' * 10000)", "error"),
        ("'\\ud800'", "error"),
        (f"'x' * {limits.MAX_RESULT_BYTES}", "output_limit"),
    ]:
        ended = hostile(sandbox, plugin, f"def run_every_minute(meta):\n    return {result}\n")
        assert ended.outcome == expected, (result, ended)


def test_a_child_that_does_not_read_its_replies_holds_no_worker_past_its_run(
    plugin: Plugin,
) -> None:
    """Replies larger than a socket buffer to a child that never reads them: the run times out,
    the workers sending them are released, and the next run's calls are served."""

    class BigAnswers:
        def fetch(self, request: RunRequest, args: FetchArgs) -> FetchResponse:
            return FetchResponse(status=200, headers={}, body="x" * 2_000_000, url=args.url)

        def cache(self, request: RunRequest, args: CacheArgs) -> Any:
            return None

    with Sandbox(
        allow_unrestricted=True, services=BigAnswers(), fetch_workers=2, meta_workers=1
    ) as sb:
        fork_server = sb.fork_server_pid
        body = f"""
        def run_every_minute(meta):
            for i in range({limits.MAX_CALLS_IN_FLIGHT_PER_RUN}):
                frame(meta, {{"t": "call", "call": i, "op": "fetch", "args": {{"url": "https://api.test/"}}}})
            time.sleep(60)
        """
        request = RunRequest(
            plugin=plugin,
            task="run_every_minute",
            limits=Limits(timeout_s=2.0, cpu_s=2.0, memory_mb=256),
            unrestricted_source=PRELUDE + textwrap.dedent(body),
        )
        # It times out, or is ended sooner: a call sent while earlier replies wait to be sent is
        # a protocol violation (an honest child reads each reply before its next call).
        ended = sb.run(request)
        assert ended.outcome == "timeout" or (
            ended.outcome == "crashed"
            and ended.error is not None
            and "replies are unread" in ended.error.message
        ), ended
        honest = RunRequest(
            plugin=plugin,
            task="run_every_minute",
            limits=LIMITS,
            unrestricted_source="def run_every_minute(meta):\n"
            "    return len(meta.fetch('https://api.test/').text)\n",
        )
        started = time.monotonic()
        outcome = sb.run(honest)
        assert outcome.outcome == "ok" and outcome.result == 2_000_000, outcome
        assert time.monotonic() - started < 5
        assert sb.fork_server_pid == fork_server


def test_one_configs_slow_fetches_do_not_hold_the_others(plugin: Plugin) -> None:
    """Config A pipelines slow fetches from several runs; config B's fetch is served at once,
    because A never has more than its bound of workers."""
    release = threading.Event()

    class Slow:
        def fetch(self, request: RunRequest, args: FetchArgs) -> FetchResponse:
            if request.run.config_id == "A":
                release.wait(20)
            return FetchResponse(status=200, headers={}, body="", url=args.url)

        def cache(self, request: RunRequest, args: CacheArgs) -> Any:
            return None

    with Sandbox(
        allow_unrestricted=True, services=Slow(), fetch_workers=4, max_fetches_per_config=2
    ) as sb:
        flood = f"""
        def run_every_minute(meta):
            for i in range({limits.MAX_CALLS_IN_FLIGHT_PER_RUN}):
                frame(meta, {{"t": "call", "call": i, "op": "fetch", "args": {{"url": "https://api.test/"}}}})
            time.sleep(4)
        """

        def request(config_id: str, source: str) -> RunRequest:
            return RunRequest(
                plugin=plugin,
                task="run_every_minute",
                limits=LIMITS,
                run=RunInfo(config_id=config_id),
                unrestricted_source=PRELUDE + textwrap.dedent(source),
            )

        floods = [sb.submit(request("A", flood)) for _ in range(3)]
        time.sleep(1.0)  # A's fetches are queued and in flight
        started = time.monotonic()
        outcome = sb.run(
            request(
                "B",
                "def run_every_minute(meta):\n    return meta.fetch('https://api.test/').status\n",
            )
        )
        elapsed = time.monotonic() - started
        release.set()
        wait(floods, timeout=30)
        assert outcome.outcome == "ok" and outcome.result == 200, outcome
        assert elapsed < 3, f"B waited {elapsed:.1f}s behind A's fetches"


def test_several_configs_slow_fetches_do_not_hold_another_configs(plugin: Plugin) -> None:
    """Red team: the per-config bound (4) does not bound configs together: 4 configs with slow
    hosts held all 16 fetch workers of a node's sandbox and another config's fetch waited 18.5 s.
    A sandbox told how many runs it will have at once (a node: its concurrency) has enough
    workers for every config's bound."""
    release = threading.Event()

    class Slow:
        def fetch(self, request: RunRequest, args: FetchArgs) -> FetchResponse:
            if str(request.run.config_id).startswith("A"):
                release.wait(20)
            return FetchResponse(status=200, headers={}, body="", url=args.url)

        def cache(self, request: RunRequest, args: CacheArgs) -> Any:
            return None

    configs, runs_each = 4, limits.MAX_FETCHES_IN_FLIGHT_PER_CONFIG
    with Sandbox(allow_unrestricted=True, services=Slow(), max_runs=configs * runs_each + 1) as sb:

        def request(config_id: str, source: str) -> RunRequest:
            return RunRequest(
                plugin=plugin,
                task="run_every_minute",
                limits=Limits(timeout_s=25.0, cpu_s=5.0, memory_mb=256),
                run=RunInfo(config_id=config_id),
                unrestricted_source=PRELUDE + textwrap.dedent(source),
            )

        fetch = "def run_every_minute(meta):\n    return meta.fetch('https://api.test/').status\n"
        floods = [
            sb.submit(request(f"A{i}", fetch)) for i in range(configs) for _ in range(runs_each)
        ]
        time.sleep(1.5)  # the A configs' fetches are in flight
        assert not any(flood.done() for flood in floods)
        outcome = sb.submit(request("B", fetch))
        try:
            report = outcome.result(timeout=10)
        finally:
            release.set()
            wait(floods, timeout=30)
        assert report.outcome == "ok" and report.result == 200, report


def test_a_fetch_does_not_outlive_its_run(plugin: Plugin) -> None:
    """A fetch asked for 30 s in a run with 2 s left gets at most those 2 s."""
    given: list[float] = []

    class Recording:
        def fetch(self, request: RunRequest, args: FetchArgs) -> FetchResponse:
            given.append(args.timeout_s)
            return FetchResponse(status=204, headers={}, body="", url=args.url)

        def cache(self, request: RunRequest, args: CacheArgs) -> Any:
            return None

    with Sandbox(allow_unrestricted=True, services=Recording()) as sb:
        outcome = sb.run(
            RunRequest(
                plugin=plugin,
                task="run_every_minute",
                limits=Limits(timeout_s=2.0, cpu_s=2.0, memory_mb=256),
                unrestricted_source="def run_every_minute(meta):\n"
                "    return meta.fetch('https://api.test/', timeout_s=30).status\n",
            )
        )
    assert outcome.outcome == "ok" and outcome.result == 204, outcome
    assert len(given) == 1 and 0 < given[0] <= 2.0


def test_calls_in_flight_per_run_are_bounded(plugin: Plugin) -> None:
    """Calls the parent has not answered yet are work the child queued on it: past the bound,
    the run ends (an honest child, whose calls are synchronous, has one)."""
    release = threading.Event()

    class Stuck:
        def fetch(self, request: RunRequest, args: FetchArgs) -> FetchResponse:
            release.wait(20)
            return FetchResponse(status=200, headers={}, body="", url=args.url)

        def cache(self, request: RunRequest, args: CacheArgs) -> Any:
            return None

    with Sandbox(allow_unrestricted=True, services=Stuck()) as sb:
        fork_server = sb.fork_server_pid
        body = """
        def run_every_minute(meta):
            for i in range(IN_FLIGHT + 1):
                frame(meta, {"t": "call", "call": i, "op": "fetch", "args": {"url": "https://api.test/"}})
            time.sleep(5)
        """
        outcome = hostile(sb, plugin, body)
        release.set()
        assert outcome.outcome == "crashed", outcome
        assert outcome.error is not None and "in flight" in outcome.error.message
        assert_next_run_ok(sb, plugin, fork_server)


def test_outcome_of_a_flooding_child_is_bounded(sandbox: Sandbox, plugin: Plugin) -> None:
    """Many fetch calls: the outcome lists at most MAX_RECORDED_FETCHES, bodies cut."""
    outcome = hostile(
        sandbox,
        plugin,
        f"""
        def run_every_minute(meta):
            for i in range({limits.MAX_RECORDED_FETCHES + 20}):
                try:
                    meta.fetch("https://not-allowed.test/", body="b" * 5000)
                except Exception:
                    pass
            return "done"
        """,
    )
    assert outcome.outcome == "ok", outcome
    assert len(outcome.fetch_calls) == limits.MAX_RECORDED_FETCHES
    assert all(len(call["body"]) <= 1025 for call in outcome.fetch_calls)


def test_descriptors_a_child_sends_never_reach_the_supervisor(
    sandbox: Sandbox, plugin: Plugin
) -> None:
    """Red team, contained: a child passes descriptors (SCM_RIGHTS) with every byte of a frame,
    which also makes the kernel deliver the frame one byte per read. The supervisor reads with
    plain `recv`, so the kernel closes them unread: none is open in the supervisor afterwards,
    the frame is read whole, and the run goes on."""
    import os

    before = len(os.listdir("/proc/self/fd"))
    outcome = hostile(
        sandbox,
        plugin,
        """
        import array
        def run_every_minute(meta):
            r, w = os.pipe()
            fds = array.array("i", [r, w, meta._channel.sock.fileno()])
            data = enc({"t": "log", "level": "info", "message": "passed"})
            for i in range(len(data)):
                while True:
                    try:
                        meta._channel.sock.sendmsg(
                            [data[i : i + 1]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)]
                        )
                        break
                    except OSError:  # ETOOMANYREFS: as many in flight as RLIMIT_NOFILE
                        time.sleep(0.001)
            return "done"
        """,
    )
    assert outcome.outcome == "ok" and outcome.result == "done", outcome
    assert [line.message for line in outcome.logs] == ["passed"]
    assert len(os.listdir("/proc/self/fd")) <= before
    assert_next_run_ok(sandbox, plugin, sandbox.fork_server_pid)
