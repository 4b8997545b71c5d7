"""The supervisor's side of the sandbox: start the fork server, send runs, serve meta calls."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
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


class SandboxError(RuntimeError):
    """The fork server could not be started or died."""


class MetaServices(Protocol):
    """What the parent does on a child's behalf: `meta.fetch` and `meta.cache`."""

    def fetch(self, request: RunRequest, args: dict[str, Any]) -> dict[str, Any]: ...

    def cache(self, request: RunRequest, args: dict[str, Any]) -> Any: ...


class Sandbox:
    """A warm fork server and the threads that talk to it. `run` is thread-safe."""

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
        self._send_lock = threading.Lock()
        self._pending: dict[int, tuple[Future[Outcome], RunRequest, MetaServices]] = {}
        self._sent_plugins: set[str] = set()
        self._seq = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._reader_thread: threading.Thread | None = None
        self._meta_pool = ThreadPoolExecutor(max_workers=meta_workers, thread_name_prefix="sandbox-meta")
        self.layers: dict[str, bool] = {}
        self.layer_reasons: dict[str, str] = {}
        self._hello = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Sandbox:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return self
            self._spawn()
        if not self._hello.wait(30):
            raise SandboxError("the sandbox fork server did not start within 30 s")
        return self

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        package_root = str(Path(__file__).resolve().parent.parent)
        # A clean environment: nothing of the supervisor's (database URL, secrets) reaches the
        # fork server, so no child can ever see it.
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": package_root,
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "random"}
        args = [sys.executable, "-c", "from sandbox.forkserver import main; main()",
                "--fd", str(theirs.fileno())]
        if not self._netns:
            args.append("--no-netns")
        if self._allow_unrestricted:
            args.append("--allow-unrestricted")
        self._hello.clear()
        self._proc = subprocess.Popen(
            args, pass_fds=(theirs.fileno(),), env=env, close_fds=True, stdin=subprocess.DEVNULL,
            cwd="/",
        )
        theirs.close()
        self._sock = ours
        self._sent_plugins = set()
        self._reader_thread = threading.Thread(
            target=self._read_loop, args=(ours, self._proc), name="sandbox-reader", daemon=True
        )
        self._reader_thread.start()

    def close(self) -> None:
        with self._lock:
            sock, proc = self._sock, self._proc
            self._sock = None
            self._proc = None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
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

    # -- runs --------------------------------------------------------------------------------
    def submit(self, request: RunRequest, services: MetaServices | None = None) -> Future[Outcome]:
        """Start a run; the future resolves to its Outcome."""
        if self._proc is None or self._proc.poll() is not None:
            self.start()
        future: Future[Outcome] = Future()
        plugin = request.plugin
        filename = plugin.manifest.main
        key = plugin_key(plugin.source, filename)
        spec: dict[str, Any] = {
            "plugin_key": key,
            "plugin_name": plugin.name,
            "filename": filename,
            "task": request.task,
            "config": request.config,
            "storage": request.storage,
            "limits": {
                "timeout_s": float(request.limits.timeout_s or DEFAULT_LIMITS.timeout_s or 30),
                "cpu_s": float(request.limits.cpu_s or DEFAULT_LIMITS.cpu_s or 30),
                "memory_mb": int(request.limits.memory_mb or DEFAULT_LIMITS.memory_mb or 256),
            },
            "run": {
                "config_id": request.run.config_id,
                "task": request.task,
                "slot": request.run.slot,
                "attempt": request.run.attempt,
                "backfilled": request.run.backfilled,
                "run_id": request.run.run_id,
                "deadline": (datetime.now(UTC) + timedelta(seconds=float(
                    request.limits.timeout_s or DEFAULT_LIMITS.timeout_s or 30))).isoformat(),
            },
        }
        if request.unrestricted_source is not None:
            spec["unrestricted_source"] = request.unrestricted_source
        with self._send_lock:
            self._seq += 1
            run_id = self._seq
            if key not in self._sent_plugins:
                spec["source"] = plugin.source
                self._sent_plugins.add(key)
            self._pending[run_id] = (future, request, services or self.services)
            sock = self._sock
            try:
                if sock is None:
                    raise OSError("sandbox closed")
                protocol.send(sock, {"t": "run", "id": run_id, "spec": spec})
            except OSError as exc:
                self._pending.pop(run_id, None)
                future.set_result(_failed(CRASHED, "SandboxError", f"fork server unreachable: {exc}"))
        return future

    def run(self, request: RunRequest, services: MetaServices | None = None) -> Outcome:
        """Run one task in a fresh jailed child and wait for its outcome."""
        return self.submit(request, services).result()

    # -- the reader thread -------------------------------------------------------------------
    def _read_loop(self, sock: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        reader = protocol.FrameReader(max_frame=64 * 1024 * 1024)
        try:
            while True:
                for message in protocol.recv(sock, reader):
                    self._on_message(sock, message)
        except (protocol.ConnectionClosed, OSError, ValueError):
            pass
        # The fork server is gone: every run it held ends as crashed; the next run restarts it.
        with self._send_lock:
            pending = list(self._pending.items())
            self._pending.clear()
        for _, (future, _, _) in pending:
            if not future.done():
                future.set_result(_failed(CRASHED, "SandboxError", "the sandbox fork server died"))
        with self._lock:
            if self._proc is proc:
                self._proc = None
                self._sock = None

    def _on_message(self, sock: socket.socket, message: dict[str, Any]) -> None:
        t = message.get("t")
        if t == "hello":
            self.layers = dict(message.get("layers") or {})
            self.layer_reasons = dict(message.get("reasons") or {})
            self._hello.set()
        elif t == "done":
            with self._send_lock:
                entry = self._pending.pop(message["id"], None)
            if entry is not None:
                entry[0].set_result(_outcome_from_json(message["outcome"]))
        elif t == "call":
            with self._send_lock:
                entry = self._pending.get(message["id"])
            if entry is not None:
                self._meta_pool.submit(self._serve_call, sock, message, entry[1], entry[2])

    def _serve_call(
        self, sock: socket.socket, message: dict[str, Any], request: RunRequest, services: MetaServices
    ) -> None:
        reply: dict[str, Any] = {"t": "reply", "id": message["id"], "call": message["call"]}
        try:
            if message.get("op") == "fetch":
                reply["value"] = services.fetch(request, message.get("args") or {})
            elif message.get("op") == "cache":
                reply["value"] = services.cache(request, message.get("args") or {})
            else:
                reply["error"] = f"unknown operation {message.get('op')!r}"
        except Exception as exc:
            reply["error"] = str(exc) or type(exc).__name__
        with self._send_lock:
            try:
                protocol.send(sock, reply)
            except OSError:
                pass


def _failed(outcome: str, kind: str, message: str) -> Outcome:
    return Outcome(outcome=outcome, error=ErrorInfo(type=kind, message=message))


def _outcome_from_json(data: dict[str, Any]) -> Outcome:
    error = data.get("error")
    return Outcome(
        outcome=str(data.get("outcome", CRASHED)),
        duration_ms=float(data.get("duration_ms", 0.0)),
        logs=[LogLine(level=str(x.get("level")), message=str(x.get("message"))) for x in data.get("logs", [])],
        error=ErrorInfo(
            type=str(error.get("type", "")),
            message=str(error.get("message", "")),
            traceback=[str(x) for x in error.get("traceback", [])],
        )
        if isinstance(error, dict)
        else None,
        result=data.get("result"),
        storage_writes=dict(data.get("storage_writes") or {}),
        storage_deletes=list(data.get("storage_deletes") or []),
        fetch_calls=list(data.get("fetch_calls") or []),
        cpu_ms=float(data.get("cpu_ms", 0.0)),
        max_rss_kb=int(data.get("max_rss_kb", 0)),
        signal=data.get("signal"),
        layers=dict(data.get("layers") or {}),
    )


def run_once(request: RunRequest, services: MetaServices | None = None, **kwargs: Any) -> Outcome:
    """Start a sandbox, run one task, stop it. For `plugin-runtime run` and tests."""
    with Sandbox(services=services, **kwargs) as sandbox:
        return sandbox.run(request)


__all__ = ["MetaServices", "Sandbox", "SandboxError", "run_once"]
