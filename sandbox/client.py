"""The supervisor's side of the sandbox: start the fork server, hand it one socket per run, talk
to each run's child directly on the other end, serve its meta calls, and turn what it said and
how it ended into one Outcome."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sandbox import protocol
from sandbox.forkserver import plugin_key
from sandbox.manifest import Limits
from sandbox.outcome import (
    CRASHED,
    DEFAULT_LIMITS,
    ErrorInfo,
    LogLine,
    Outcome,
    RunRequest,
)
from sandbox.services import LocalServices

EXIT_GRACE_S = 0.5  # after the child exits, how long its last frames may take to arrive
SEND_TIMEOUT_S = 30.0


class SandboxError(RuntimeError):
    """The fork server could not be started or died."""


class MetaServices(Protocol):
    """What the parent does on a child's behalf: `meta.fetch` and `meta.cache`."""

    def fetch(self, request: RunRequest, args: dict[str, Any]) -> dict[str, Any]: ...

    def cache(self, request: RunRequest, args: dict[str, Any]) -> Any: ...


@dataclass
class _Run:
    run_id: int
    future: Future[Outcome]
    request: RunRequest
    services: MetaServices
    sock: socket.socket
    cpu_s: float
    reader: protocol.FrameReader = field(default_factory=protocol.FrameReader)
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    logs: list[LogLine] = field(default_factory=list)
    fetch_calls: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    exit: dict[str, Any] | None = None
    exit_seen_at: float | None = None
    closed: bool = False
    overflow: bool = False


class Sandbox:
    """A warm fork server and the thread that talks to it and to the runs. Thread-safe."""

    def __init__(
        self,
        *,
        services: MetaServices | None = None,
        caps: Limits = DEFAULT_LIMITS,
        netns: bool = True,
        allow_unrestricted: bool = False,
        meta_workers: int = 8,
    ) -> None:
        self.services: MetaServices = services or LocalServices()
        self.caps = caps
        self._netns = netns
        self._allow_unrestricted = allow_unrestricted
        self._lock = threading.Lock()
        self._runs: dict[int, _Run] = {}
        self._new: list[_Run] = []
        self._sent_plugins: set[str] = set()
        self._seq = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._io_thread: threading.Thread | None = None
        self._meta_pool = ThreadPoolExecutor(
            max_workers=meta_workers, thread_name_prefix="sandbox-meta"
        )
        self.layers: dict[str, bool] = {}
        self.layer_reasons: dict[str, str] = {}
        self._hello = threading.Event()
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Sandbox:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._spawn()
        if not self._hello.wait(30):
            raise SandboxError("the sandbox fork server did not start within 30 s")
        return self

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        package_root = str(Path(__file__).resolve().parent.parent)
        # A clean environment: nothing of the supervisor's (database URL, secrets) reaches the
        # fork server, so no child can ever see it.
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "PYTHONPATH": package_root,
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        args = [
            sys.executable,
            "-c",
            "from sandbox.forkserver import main; main()",
            "--fd",
            str(theirs.fileno()),
        ]
        if not self._netns:
            args.append("--no-netns")
        if self._allow_unrestricted:
            args.append("--allow-unrestricted")
        self._hello.clear()
        self._proc = subprocess.Popen(
            args,
            pass_fds=(theirs.fileno(),),
            env=env,
            close_fds=True,
            stdin=subprocess.DEVNULL,
            cwd="/",
        )
        theirs.close()
        self._control = ours
        self._sent_plugins = set()
        self._io_thread = threading.Thread(
            target=self._io_loop, args=(ours, self._proc), name="sandbox-io", daemon=True
        )
        self._io_thread.start()

    def close(self) -> None:
        with self._lock:
            control, proc = self._control, self._proc
            self._control = None
            self._proc = None
            self._closed = True
        if control is not None:
            try:
                control.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            control.close()
        self._wake()
        if proc is not None:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._meta_pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def fork_server_pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    # -- runs --------------------------------------------------------------------------------
    def submit(self, request: RunRequest, services: MetaServices | None = None) -> Future[Outcome]:
        """Start a run; the future resolves to its Outcome."""
        if self._proc is None or self._proc.poll() is not None:
            self.start()
        future: Future[Outcome] = Future()
        plugin = request.plugin
        filename = plugin.manifest.main
        key = plugin_key(plugin.source, filename)
        limits = {
            "timeout_s": float(request.limits.timeout_s or DEFAULT_LIMITS.timeout_s or 30),
            "cpu_s": float(request.limits.cpu_s or DEFAULT_LIMITS.cpu_s or 30),
            "memory_mb": int(request.limits.memory_mb or DEFAULT_LIMITS.memory_mb or 256),
        }
        # What the fork server sees: which code, which function, which limits. No run data.
        spec: dict[str, Any] = {
            "plugin_key": key,
            "plugin_name": plugin.name,
            "filename": filename,
            "task": request.task,
            "limits": limits,
            "unrestricted": request.unrestricted_source is not None,
        }
        # What only the child sees, after it has entered the jail.
        start = {
            "t": "start",
            "config": request.config,
            "storage": request.storage,
            "run": {
                "config_id": request.run.config_id,
                "task": request.task,
                "slot": request.run.slot,
                "attempt": request.run.attempt,
                "backfilled": request.run.backfilled,
                "run_id": request.run.run_id,
                "deadline": (
                    datetime.now(UTC) + timedelta(seconds=limits["timeout_s"])
                ).isoformat(),
            },
        }
        if request.unrestricted_source is not None:
            start["unrestricted_source"] = request.unrestricted_source
        ours, theirs = socket.socketpair()
        ours.settimeout(SEND_TIMEOUT_S)
        run = _Run(0, future, request, services or self.services, ours, limits["cpu_s"])
        try:
            with self._lock:
                self._seq += 1
                run.run_id = self._seq
                if key not in self._sent_plugins:
                    spec["source"] = plugin.source
                    self._sent_plugins.add(key)
                control = self._control
                if control is None:
                    raise OSError("sandbox closed")
                self._runs[run.run_id] = run
                self._new.append(run)
                socket.send_fds(
                    control,
                    [protocol.encode({"t": "run", "id": run.run_id, "spec": spec})],
                    [theirs.fileno()],
                )
        except OSError as exc:
            with self._lock:
                self._runs.pop(run.run_id, None)
            ours.close()
            future.set_result(_failed(CRASHED, "SandboxError", f"fork server unreachable: {exc}"))
            return future
        finally:
            theirs.close()
        self._wake()
        try:
            # The child reads this after entering the jail (it may block until then).
            with run.send_lock:
                protocol.send(ours, start)
        except OSError:
            pass  # the child died first: the fork server's exit report says how
        return future

    def run(self, request: RunRequest, services: MetaServices | None = None) -> Outcome:
        """Run one task in a fresh jailed child and wait for its outcome."""
        return self.submit(request, services).result()

    # -- the I/O thread ----------------------------------------------------------------------
    def _io_loop(self, control: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        selector = selectors.DefaultSelector()
        selector.register(control, selectors.EVENT_READ, "control")
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        reader = protocol.FrameReader(max_frame=64 * 1024 * 1024)
        alive = True
        while alive:
            with self._lock:
                new, self._new = self._new, []
            for run in new:
                selector.register(run.sock, selectors.EVENT_READ, run)
            timeout = self._grace_timeout()
            for key, _ in selector.select(timeout):
                if key.data == "wake":
                    os.read(self._wake_r, 4096)
                elif key.data == "control":
                    try:
                        data = control.recv(1 << 20)
                    except OSError:
                        data = b""
                    if not data:
                        alive = False
                        break
                    for message in reader.feed(data):
                        self._on_control(message)
                else:
                    self._on_run_data(key.data, selector)
            self._finish_ready(selector)
        # The fork server is gone: every run it held ends as crashed; the next run restarts it.
        with self._lock:
            pending = list(self._runs.values())
            self._runs.clear()
            if self._proc is proc:
                self._proc = None
                self._control = None
        for run in pending:
            run.sock.close()
            if not run.future.done():
                run.future.set_result(
                    _failed(CRASHED, "SandboxError", "the sandbox fork server died")
                )

    def _grace_timeout(self) -> float | None:
        with self._lock:
            waiting = [r.exit_seen_at for r in self._runs.values() if r.exit_seen_at is not None]
        if not waiting:
            return None
        return max(0.0, min(waiting) + EXIT_GRACE_S - time.monotonic())

    def _on_control(self, message: dict[str, Any]) -> None:
        t = message.get("t")
        if t == "hello":
            self.layers = dict(message.get("layers") or {})
            self.layer_reasons = dict(message.get("reasons") or {})
            self._hello.set()
        elif t == "exit":
            with self._lock:
                run = self._runs.get(message["id"])
            if run is not None:
                run.exit = message
                run.exit_seen_at = time.monotonic()

    def _on_run_data(self, run: _Run, selector: selectors.BaseSelector) -> None:
        try:
            data = run.sock.recv(1 << 20)
        except OSError:
            data = b""
        if not data:
            self._close_run_socket(run, selector)
            return
        try:
            frames = run.reader.feed(data)
        except (protocol.FrameTooLarge, ValueError):
            run.overflow = True
            self._send_control({"t": "kill", "id": run.run_id, "reason": "output_limit"})
            self._close_run_socket(run, selector)
            return
        for frame in frames:
            t = frame.get("t")
            if t == "log" and run.result is None:
                run.logs.append(
                    LogLine(
                        level=str(frame.get("level", "info")), message=str(frame.get("message", ""))
                    )
                )
            elif t == "call":
                if frame.get("op") == "fetch":
                    run.fetch_calls.append(dict(frame.get("args") or {}))
                self._meta_pool.submit(self._serve_call, run, frame)
            elif t == "result" and run.result is None:
                run.result = frame

    def _close_run_socket(self, run: _Run, selector: selectors.BaseSelector) -> None:
        if not run.closed:
            run.closed = True
            try:
                selector.unregister(run.sock)
            except (KeyError, ValueError):
                pass

    def _send_control(self, message: dict[str, Any]) -> None:
        with self._lock:
            control = self._control
            if control is not None:
                try:
                    protocol.send(control, message)
                except OSError:
                    pass

    def _finish_ready(self, selector: selectors.BaseSelector) -> None:
        now = time.monotonic()
        with self._lock:
            done = [
                r
                for r in self._runs.values()
                if r.exit is not None
                and (
                    r.closed
                    or (r.exit_seen_at is not None and now >= r.exit_seen_at + EXIT_GRACE_S)
                )
            ]
            for run in done:
                del self._runs[run.run_id]
        for run in done:
            self._close_run_socket(run, selector)
            run.sock.close()
            outcome = _compose(run)
            outcome.layers = dict(self.layers)
            run.future.set_result(outcome)

    def _serve_call(self, run: _Run, frame: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"t": "reply", "call": frame.get("call")}
        args = frame.get("args") or {}
        try:
            if frame.get("op") == "fetch":
                reply["value"] = run.services.fetch(run.request, args)
            elif frame.get("op") == "cache":
                reply["value"] = run.services.cache(run.request, args)
            else:
                reply["error"] = f"unknown operation {frame.get('op')!r}"
        except Exception as exc:
            reply["error"] = str(exc) or type(exc).__name__
        with run.send_lock:
            try:
                protocol.send(run.sock, reply)
            except OSError:
                pass


def _err(kind: str, message: str) -> ErrorInfo:
    return ErrorInfo(type=kind, message=message)


def _failed(outcome: str, kind: str, message: str) -> Outcome:
    return Outcome(outcome=outcome, error=_err(kind, message))


_LIMIT_NAMES = {
    "memory_limit": "MemoryLimit",
    "output_limit": "OutputLimit",
    "bad_plugin": "BadPlugin",
    "crashed": "Crashed",
}


def _compose(run: _Run) -> Outcome:
    """One outcome from what the child said and how the fork server saw it end."""
    exit_info = run.exit or {}
    out = Outcome(
        outcome=CRASHED,
        logs=run.logs,
        fetch_calls=run.fetch_calls,
        duration_ms=float(exit_info.get("duration_ms", 0.0)),
        cpu_ms=float(exit_info.get("cpu_ms", 0.0)),
        max_rss_kb=int(exit_info.get("max_rss_kb", 0)),
    )
    if "bad_plugin" in exit_info:
        out.outcome, out.error = "bad_plugin", _err("PluginCodeError", str(exit_info["bad_plugin"]))
        return out
    if "refused" in exit_info:
        out.outcome, out.error = "bad_plugin", _err("SecurityError", str(exit_info["refused"]))
        return out
    status = int(exit_info.get("status", 0))
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    out.signal = sig
    killed_for = exit_info.get("killed_for")
    res = run.result
    if killed_for == "timeout":
        out.outcome = "timeout"
        out.error = _err(
            "Timeout", f"wall time above {float(exit_info.get('timeout_s', 0)):g} s; killed"
        )
    elif killed_for == "output_limit" or run.overflow:
        out.outcome = "output_limit"
        out.error = _err("OutputLimit", "a frame from the child exceeded the size cap; killed")
    elif sig == signal.SIGXCPU or (
        sig == signal.SIGKILL and out.cpu_ms >= run.cpu_s * 1000.0 * 0.95
    ):
        out.outcome = "cpu_limit"
        out.error = _err("CpuLimit", f"CPU time above {run.cpu_s:g} s; killed")
    elif res is not None and res.get("status") in ("ok", "error", *_LIMIT_NAMES):
        kind = str(res["status"])
        out.outcome = kind
        if kind == "ok":
            out.result = res.get("result")
            out.storage_writes = dict(res.get("writes") or {})
            out.storage_deletes = list(res.get("deletes") or [])
        elif kind == "error":
            error = res.get("error") or {}
            out.error = ErrorInfo(
                type=str(error.get("type", "")),
                message=str(error.get("message", "")),
                traceback=[str(x) for x in error.get("traceback", [])],
            )
        else:
            out.error = _err(_LIMIT_NAMES[kind], str(res.get("message", "")))
    else:
        how = (
            f"killed by signal {signal.Signals(sig).name}"
            if sig
            else f"exited with status {os.WEXITSTATUS(status)} without a result"
        )
        out.error = _err("Crashed", how)
    return out


def run_once(request: RunRequest, services: MetaServices | None = None, **kwargs: Any) -> Outcome:
    """Start a sandbox, run one task, stop it. For `plugin-runtime run` and tests."""
    with Sandbox(services=services, **kwargs) as sandbox:
        return sandbox.run(request)


__all__ = ["MetaServices", "Sandbox", "SandboxError", "run_once"]
