"""The supervisor's side of the sandbox: start the fork server, hand it one socket per run, talk
to each run's child directly on the other end, serve its meta calls, and turn what it said and
how it ended into one RunReport."""

from __future__ import annotations

import logging
import math
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sandbox import limits, protocol
from sandbox.forkserver import plugin_key
from sandbox.jail import REFUSE_USERNS_ENV
from sandbox.manifest import Limits
from sandbox.outcome import (
    DEFAULT_LIMITS,
    ErrorInfo,
    LogLine,
    Outcome,
    RunReport,
    RunRequest,
)
from sandbox.protocol import CacheArgs, CallFrame, FetchArgs, FetchResponse, LogFrame, ResultFrame
from sandbox.services import LocalServices

log = logging.getLogger(__name__)

EXIT_GRACE_S = 0.5  # after the child exits, how long its last frames may take to arrive
MAX_REPLY_ERROR = 1000  # characters of an error message sent back to a child


class SandboxError(RuntimeError):
    """The fork server could not be started or died."""


class MetaServices(Protocol):
    """What the parent does on a child's behalf: `meta.fetch` and `meta.cache`."""

    def fetch(self, request: RunRequest, args: FetchArgs) -> FetchResponse: ...

    def cache(self, request: RunRequest, args: CacheArgs) -> Any: ...


@dataclass
class _Run:
    seq: int  # this sandbox's number for the run (not the runtime's run_id)
    future: Future[RunReport]
    request: RunRequest
    services: MetaServices
    sock: socket.socket
    cpu_s: float
    deadline: float = float("inf")  # time.monotonic() past which the run is killed
    reader: protocol.FrameReader = field(default_factory=protocol.FrameReader)
    # What is to be sent to the child and did not fit in its socket yet (guarded by send_lock).
    # No thread ever waits for a child to read: a worker sends what fits and leaves the rest
    # here, which the I/O thread sends as the socket drains. Bounded by the calls in flight.
    outbox: bytearray = field(default_factory=bytearray)
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    logs: list[LogLine] = field(default_factory=list)
    log_bytes: int = 0
    received: int = 0  # bytes read from the child
    calls: int = 0
    in_flight: int = 0  # calls received and not yet answered (guarded by count_lock)
    # Never held while sending: the I/O thread takes it, and must not wait on a slow reader.
    count_lock: threading.Lock = field(default_factory=threading.Lock)
    fetch_calls: list[dict[str, Any]] = field(default_factory=list)
    result: ResultFrame | None = None
    exit: dict[str, Any] | None = None
    exit_seen_at: float | None = None
    closed: bool = False  # no longer read (it hung up, or the run is ending)
    finished: bool = False  # the outcome is set; the socket is shut
    # Set by the parent when what the child sent ends the run: (outcome, why).
    violation: tuple[Outcome, str] | None = None


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
        fetch_workers: int = 16,
        max_runs: int | None = None,
        max_fetches_per_config: int = limits.MAX_FETCHES_IN_FLIGHT_PER_CONFIG,
        refuse_namespaces: bool | None = None,
        step_timing: str | None = None,
    ) -> None:
        """`refuse_namespaces` (default: $PLUGIN_RUNTIME_REFUSE_USERNS=1) is a test hook: the
        fork server first refuses itself `unshare` and namespace clones, as a container's default
        seccomp profile does, so the posture of such hosts is really exercised.
        `step_timing` (bench only, off by default) makes the fork server time each step of
        every run and write the figures to that path when it stops (sandbox/steptiming.py)."""
        self.services: MetaServices = services or LocalServices()
        self.caps = caps
        self._netns = netns
        self._allow_unrestricted = allow_unrestricted
        if refuse_namespaces is None:
            refuse_namespaces = os.environ.get(REFUSE_USERNS_ENV) == "1"
        self._refuse_namespaces = refuse_namespaces
        # Bench only (sandbox/steptiming.py): where the fork server writes per-step CPU figures.
        self._step_timing = step_timing
        self._lock = threading.Lock()
        self._runs: dict[int, _Run] = {}
        self._new: list[_Run] = []
        # Runs with bytes left in their outbox (or whose socket is still watched for room): the
        # only ones the I/O thread looks at for writing, instead of every run on every wake-up.
        self._outboxed: dict[int, _Run] = {}
        self._sent_plugins: set[str] = set()
        self._seq = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._io_thread: threading.Thread | None = None
        # Cache calls and fetches are served by separate pools, and each config has at most
        # `max_fetches_per_config` fetches in flight (more wait in its own queue, holding no
        # worker): one config's slow hosts cannot take the workers that serve the others.
        self._meta_pool = ThreadPoolExecutor(
            max_workers=meta_workers, thread_name_prefix="sandbox-meta"
        )
        # With `max_runs` (the most runs the caller will have at once), enough fetch workers that
        # the per-config bound alone keeps every config served: the configs of the other runs
        # hold at most MAX_FETCHES_IN_FLIGHT_PER_CONFIG each. With 16 workers, 4 configs with
        # slow hosts held them all and another config's fetch waited 18.5 s (red team). The
        # pool starts its threads only as fetches need them.
        if max_runs is not None:
            fetch_workers = max(fetch_workers, max_fetches_per_config * max_runs)
        self._fetch_pool = ThreadPoolExecutor(
            max_workers=fetch_workers, thread_name_prefix="sandbox-fetch"
        )
        self._max_fetches_per_config = max_fetches_per_config
        self._fetch_lock = threading.Lock()
        self._fetch_active: dict[Any, int] = {}
        self._fetch_waiting: dict[Any, deque[tuple[_Run, CallFrame]]] = {}
        self.layers: dict[str, bool] = {}
        self.layer_reasons: dict[str, str] = {}
        self.posture = ""  # root, userns or unprivileged (sandbox/jail.py), with its reason
        self.posture_reason = ""
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
        if self._refuse_namespaces:
            args.append("--refuse-namespaces")
        if self._step_timing is not None:
            args += ["--step-timing", self._step_timing]
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
        self._fetch_pool.shutdown(wait=False, cancel_futures=True)

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
    def submit(
        self, request: RunRequest, services: MetaServices | None = None
    ) -> Future[RunReport]:
        """Start a run; the future resolves to its RunReport."""
        if self._proc is None or self._proc.poll() is not None:
            self.start()
        future: Future[RunReport] = Future()
        plugin = request.plugin
        filename = plugin.manifest.main
        key = plugin_key(plugin.source, filename)
        limits = _run_limits(request.limits)
        if isinstance(limits, str):
            future.set_result(_failed(Outcome.CRASHED, "SandboxError", limits))
            return future
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
        try:
            start_frame = protocol.encode(start)
        except (ValueError, TypeError, RecursionError) as exc:  # UnicodeError is a ValueError
            future.set_result(
                _failed(Outcome.CRASHED, "SandboxError", f"the run's data cannot be sent: {exc}")
            )
            return future
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        run = _Run(0, future, request, services or self.services, ours, limits["cpu_s"])
        run.deadline = time.monotonic() + limits["timeout_s"]
        try:
            with self._lock:
                self._seq += 1
                run.seq = self._seq
                if key not in self._sent_plugins:
                    spec["source"] = plugin.source
                    self._sent_plugins.add(key)
                control = self._control
                if control is None:
                    raise OSError("sandbox closed")
                self._runs[run.seq] = run
                self._new.append(run)
                socket.send_fds(
                    control,
                    [protocol.encode({"t": "run", "id": run.seq, "spec": spec})],
                    [theirs.fileno()],
                )
        except OSError as exc:
            with self._lock:
                self._runs.pop(run.seq, None)
                self._new = [r for r in self._new if r is not run]
            ours.close()
            future.set_result(
                _failed(Outcome.CRASHED, "SandboxError", f"fork server unreachable: {exc}")
            )
            return future
        finally:
            theirs.close()
        self._wake()
        # The child reads its start after entering the jail: what does not fit in the socket's
        # buffer until then is sent by the I/O thread, so the caller (a node's dispatcher
        # thread) never blocks on a child.
        self._post(run, start_frame)
        return future

    def run(self, request: RunRequest, services: MetaServices | None = None) -> RunReport:
        """Run one task in a fresh jailed child and wait for its outcome."""
        return self.submit(request, services).result()

    # -- the I/O thread ----------------------------------------------------------------------
    # Nothing a child sends may end this thread: every run's frames are handled inside a guard
    # that turns any failure into the end of that run only.
    def _io_loop(self, control: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        selector = selectors.DefaultSelector()
        selector.register(control, selectors.EVENT_READ, "control")
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        reader = protocol.FrameReader(max_frame=protocol.MAX_CONTROL_FRAME_BYTES)
        alive = True
        while alive:
            with self._lock:
                new, self._new = self._new, []
            for run in new:
                try:
                    selector.register(run.sock, selectors.EVENT_READ, run)
                except (ValueError, OSError):  # closed already: submit() gave up on it
                    run.closed = True
            self._watch_outboxes(selector)
            timeout = self._grace_timeout()
            for key, events in selector.select(timeout):
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
                    try:
                        for message in reader.feed(data):
                            self._on_control(message)
                    except Exception:
                        log.exception("unreadable report from the sandbox fork server")
                else:
                    if events & selectors.EVENT_WRITE:
                        self._flush(key.data)
                    if events & selectors.EVENT_READ:
                        self._on_run_data(key.data, selector)
            self._finish_ready(selector)
        # The fork server is gone: every run it held ends as crashed; the next run restarts it.
        with self._lock:
            pending = list(self._runs.values())
            self._runs.clear()
            self._outboxed.clear()
            if self._proc is proc:
                self._proc = None
                self._control = None
        for run in pending:
            self._shut(run)
            if not run.future.done():
                run.future.set_result(
                    _failed(Outcome.CRASHED, "SandboxError", "the sandbox fork server died")
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
            self.layers = {str(k): bool(v) for k, v in dict(message.get("layers") or {}).items()}
            self.layer_reasons = {
                str(k): str(v) for k, v in dict(message.get("reasons") or {}).items()
            }
            self.posture = str(message.get("posture") or "")
            self.posture_reason = str(message.get("posture_reason") or "")
            self._hello.set()
        elif t == "exit":
            with self._lock:
                run = self._runs.get(message.get("id"))  # type: ignore[arg-type]
            if run is not None:
                run.exit = message
                run.exit_seen_at = time.monotonic()

    def _post(self, run: _Run, data: bytes) -> None:
        """Send `data` to the child without waiting for it to read: what does not fit now is
        left in the run's outbox for the I/O thread."""
        with run.send_lock:
            if run.finished:
                return
            if run.outbox:
                run.outbox += data
                return
            try:
                sent = run.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:  # it hung up: nobody reads the rest
                return
            if sent == len(data):
                return
            run.outbox += data[sent:]
        with self._lock:
            self._outboxed[run.seq] = run
        self._wake()

    def _flush(self, run: _Run) -> None:
        """The I/O thread: the child's socket has room again."""
        with run.send_lock:
            if run.finished or not run.outbox:
                return
            try:
                sent = run.sock.send(run.outbox)
            except BlockingIOError:
                return
            except OSError:
                run.outbox.clear()
                return
            del run.outbox[:sent]

    def _watch_outboxes(self, selector: selectors.BaseSelector) -> None:
        """Watch for room in the sockets of the runs that have something left to send (the
        runs `_post` left bytes for; a run leaves the set once its outbox is empty and its
        socket is watched for reading only)."""
        with self._lock:
            runs = list(self._outboxed.values())
        for run in runs:
            if run.closed or run.finished:
                with self._lock:
                    self._outboxed.pop(run.seq, None)
                continue
            with run.send_lock:
                waiting = bool(run.outbox)
            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if waiting else 0)
            try:
                if selector.get_key(run.sock).events != wanted:
                    selector.modify(run.sock, wanted, run)
            except (KeyError, ValueError, OSError):
                continue
            if not waiting:
                # Both locks, in this order (as above): a `_post` that refilled the outbox
                # meanwhile keeps the run in the set, and its wake-up brings us back.
                with self._lock, run.send_lock:
                    if not run.outbox:
                        self._outboxed.pop(run.seq, None)

    def _on_run_data(self, run: _Run, selector: selectors.BaseSelector) -> None:
        try:
            data = run.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            if run.reader.pending and run.violation is None:
                self._end_run(
                    run, Outcome.CRASHED, "malformed frame from the child: it hung up mid-frame"
                )
            self._close_run_socket(run, selector)
            return
        if run.violation is not None:
            return  # already ending: what else it sends is not read
        run.received += len(data)
        if run.received > limits.MAX_RUN_RECEIVED_BYTES:
            self._end_run(
                run,
                Outcome.OUTPUT_LIMIT,
                f"sent more than {limits.MAX_RUN_RECEIVED_BYTES} bytes; killed",
            )
            self._close_run_socket(run, selector)
            return
        try:
            for raw in run.reader.feed(data):
                self._on_frame(run, protocol.parse_child_frame(raw))
                if run.violation is not None:
                    break
        except protocol.FrameTooLarge as exc:
            self._end_run(run, Outcome.OUTPUT_LIMIT, f"{exc}; killed")
        except protocol.ProtocolError as exc:
            self._end_run(run, Outcome.CRASHED, f"malformed frame from the child: {exc}; killed")
        except Exception as exc:  # MemoryError, RecursionError, anything: this run only
            self._end_run(
                run,
                Outcome.CRASHED,
                f"{type(exc).__name__} while reading a frame from the child: {exc}"[:500],
            )
        if run.violation is not None:
            self._close_run_socket(run, selector)

    def _on_frame(self, run: _Run, frame: protocol.ChildFrame) -> None:
        """One validated frame: count it against the run's caps and act on it."""
        if run.result is not None:
            raise protocol.ProtocolError("a frame after the result")
        if isinstance(frame, LogFrame):
            run.log_bytes += len(frame.message.encode("utf-8"))
            if len(run.logs) >= limits.MAX_LOG_LINES or run.log_bytes > limits.MAX_LOG_BYTES:
                self._end_run(
                    run,
                    Outcome.OUTPUT_LIMIT,
                    f"more than {limits.MAX_LOG_LINES} log lines or {limits.MAX_LOG_BYTES} bytes",
                )
                return
            run.logs.append(LogLine(level=frame.level, message=frame.message))
        elif isinstance(frame, CallFrame):
            run.calls += 1
            if run.calls > limits.MAX_CALLS_PER_RUN:
                self._end_run(
                    run, Outcome.OUTPUT_LIMIT, f"more than {limits.MAX_CALLS_PER_RUN} meta calls"
                )
                return
            with run.send_lock:
                unread = len(run.outbox)
            if unread:
                # An honest child reads a whole reply before its next call: with this, what
                # waits in the outbox is bounded by the calls in flight.
                raise protocol.ProtocolError("a meta call while earlier replies are unread")
            with run.count_lock:
                if run.in_flight >= limits.MAX_CALLS_IN_FLIGHT_PER_RUN:
                    raise protocol.ProtocolError(
                        f"more than {limits.MAX_CALLS_IN_FLIGHT_PER_RUN} meta calls in flight"
                    )
                run.in_flight += 1
            if isinstance(frame.args, FetchArgs):
                if len(run.fetch_calls) < limits.MAX_RECORDED_FETCHES:
                    run.fetch_calls.append(_fetch_record(frame.args))
                self._queue_fetch(run, frame)
            else:
                self._meta_pool.submit(self._serve_call, run, frame)
        else:
            problem = frame.over_cap()
            if problem:
                self._end_run(run, Outcome.OUTPUT_LIMIT, problem)
                return
            run.result = frame

    def _end_run(self, run: _Run, outcome: Outcome, why: str) -> None:
        """What the child sent ends its run: kill it, keep the first reason."""
        if run.violation is None:
            run.violation = (outcome, why)
            self._send_control({"t": "kill", "id": run.seq, "reason": outcome})

    def _close_run_socket(self, run: _Run, selector: selectors.BaseSelector) -> None:
        if not run.closed:
            run.closed = True
            try:
                selector.unregister(run.sock)
            except (KeyError, ValueError):
                pass

    def _shut(self, run: _Run) -> None:
        """No more replies to this run: drop what was left to send and close its socket (a
        worker holds the lock only for a send that does not wait)."""
        with run.send_lock:
            run.finished = True
            run.outbox.clear()
            try:
                run.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            run.sock.close()

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
                del self._runs[run.seq]
                self._outboxed.pop(run.seq, None)
        for run in done:
            self._close_run_socket(run, selector)
            self._shut(run)
            try:
                outcome = _compose(run)
            except Exception as exc:  # never leave a caller waiting for ever
                log.exception("could not compose the outcome of run %s", run.seq)
                outcome = _failed(
                    Outcome.CRASHED, "Crashed", f"the run's end could not be read: {exc}"
                )
            outcome.layers = dict(self.layers)
            if not run.future.done():
                run.future.set_result(outcome)

    # -- meta calls ------------------------------------------------------------------------------
    def _queue_fetch(self, run: _Run, frame: CallFrame) -> None:
        scope = run.request.scope
        with self._fetch_lock:
            active = self._fetch_active.get(scope, 0)
            if active >= self._max_fetches_per_config:
                self._fetch_waiting.setdefault(scope, deque()).append((run, frame))
                return
            self._fetch_active[scope] = active + 1
        self._fetch_pool.submit(self._serve_fetch, scope, run, frame)

    def _serve_fetch(self, scope: Any, run: _Run, frame: CallFrame) -> None:
        try:
            self._serve_call(run, frame)
        finally:
            with self._fetch_lock:
                waiting = self._fetch_waiting.get(scope)
                following = waiting.popleft() if waiting else None
                if waiting is not None and not waiting:
                    del self._fetch_waiting[scope]
                if following is None:
                    self._fetch_active[scope] -= 1
                    if not self._fetch_active[scope]:
                        del self._fetch_active[scope]
            if following is not None:
                try:
                    self._fetch_pool.submit(self._serve_fetch, scope, *following)
                except RuntimeError:  # the sandbox is closing
                    pass

    def _serve_call(self, run: _Run, frame: CallFrame) -> None:
        reply: dict[str, Any] = {"t": "reply", "call": frame.call}
        try:
            if run.finished:
                return  # the run ended while this call waited its turn
            problem = frame.args.over_cap()
            if problem:
                reply["error"] = problem
            elif isinstance(frame.args, FetchArgs):
                # A fetch does not outlive its run: its deadline is at most the run's.
                left = run.deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the run's time is up")
                args = replace(frame.args, timeout_s=min(frame.args.timeout_s, left))
                reply["value"] = run.services.fetch(run.request, args).to_json()
            else:
                reply["value"] = run.services.cache(run.request, frame.args)
            try:
                data = protocol.encode(reply)
            except (TypeError, ValueError, RecursionError) as exc:
                data = protocol.encode(
                    {"t": "reply", "call": frame.call, "error": f"unanswerable: {exc}"[:200]}
                )
        except Exception as exc:
            message = (str(exc) or type(exc).__name__)[:MAX_REPLY_ERROR]
            data = protocol.encode({"t": "reply", "call": frame.call, "error": message})
        finally:
            with run.count_lock:
                run.in_flight -= 1
        self._post(run, data)


# The longest wall time a run may be given: far above any operator's cap, far below what would
# overflow a datetime or the fork server's clock arithmetic.
MAX_RUN_SECONDS = 366 * 86_400.0


def _run_limits(asked: Limits) -> dict[str, Any] | str:
    """The limits the fork server is given, or why they cannot be (red team: a NaN timeout from
    a plugin.json raised ValueError out of `submit`, which ends a node's dispatcher thread; a
    NaN deadline in the fork server's heap would stop every other run's watchdog)."""
    try:
        limits = {
            "timeout_s": float(asked.timeout_s or DEFAULT_LIMITS.timeout_s or 30),
            "cpu_s": float(asked.cpu_s or DEFAULT_LIMITS.cpu_s or 30),
            "memory_mb": int(asked.memory_mb or DEFAULT_LIMITS.memory_mb or 256),
        }
    except (TypeError, ValueError, OverflowError) as exc:
        return f"invalid limits: {exc}"
    highest = {"timeout_s": MAX_RUN_SECONDS, "cpu_s": MAX_RUN_SECONDS, "memory_mb": 1 << 30}
    for name, value in limits.items():
        if not (math.isfinite(value) and 0 < value <= highest[name]):
            return f"invalid limits: {name} is {value!r}"
    return limits


def _fetch_record(args: FetchArgs) -> dict[str, Any]:
    """A fetch call as a run's outcome lists it (the body cut to 1 KiB)."""
    body = args.body if args.body is None or len(args.body) <= 1024 else args.body[:1024] + "…"
    return {
        "url": args.url[: limits.MAX_URL_CHARS],
        "method": args.method[: limits.MAX_FETCH_METHOD_CHARS],
        "headers": dict(list(args.headers.items())[: limits.MAX_FETCH_HEADERS]),
        "body": body,
        "timeout_s": args.timeout_s,
    }


def _err(kind: str, message: str) -> ErrorInfo:
    return ErrorInfo(type=kind, message=message)


def _failed(outcome: Outcome, kind: str, message: str) -> RunReport:
    return RunReport(outcome=outcome, error=_err(kind, message))


_LIMIT_NAMES = {
    "memory_limit": "MemoryLimit",
    "output_limit": "OutputLimit",
    "bad_plugin": "BadPlugin",
    "crashed": "Crashed",
}


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:  # a real-time signal has no name
        return f"signal {sig}"


def _number(info: dict[str, Any], name: str) -> float:
    value = info.get(name, 0.0)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _compose(run: _Run) -> RunReport:
    """One outcome from what the child said and how the fork server saw it end."""
    exit_info = run.exit or {}
    out = RunReport(
        outcome=Outcome.CRASHED,
        logs=run.logs,
        fetch_calls=run.fetch_calls,
        duration_ms=_number(exit_info, "duration_ms"),
        cpu_ms=_number(exit_info, "cpu_ms"),
        max_rss_kb=int(_number(exit_info, "max_rss_kb")),
    )
    if "bad_plugin" in exit_info:
        # The refusal quotes the plugin's source lines: text for people, like a child's.
        out.outcome = Outcome.BAD_PLUGIN
        out.error = _err("PluginCodeError", protocol.clean_text(str(exit_info["bad_plugin"])))
        return out
    if "failed" in exit_info:
        out.error = _err("SandboxError", str(exit_info["failed"]))
        return out
    if "refused" in exit_info:
        out.outcome = Outcome.BAD_PLUGIN
        out.error = _err("SecurityError", str(exit_info["refused"]))
        return out
    status = int(_number(exit_info, "status"))
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    out.signal = sig
    killed_for = exit_info.get("killed_for")
    res = run.result
    if killed_for == "timeout":
        out.outcome = Outcome.TIMEOUT
        out.error = _err(
            "Timeout", f"wall time above {_number(exit_info, 'timeout_s'):g} s; killed"
        )
    elif run.violation is not None:
        out.outcome, why = run.violation
        out.error = _err(
            "OutputLimit" if out.outcome == Outcome.OUTPUT_LIMIT else "ProtocolError", why
        )
    elif sig == signal.SIGXCPU or (
        sig == signal.SIGKILL and out.cpu_ms >= run.cpu_s * 1000.0 * 0.95
    ):
        out.outcome = Outcome.CPU_LIMIT
        out.error = _err("CpuLimit", f"CPU time above {run.cpu_s:g} s; killed")
    elif res is not None:
        out.outcome = Outcome(res.status)
        if res.status == "ok":
            out.result = res.result
            out.storage_writes = dict(res.writes)
            out.storage_deletes = list(res.deletes)
        elif res.error is not None:
            out.error = ErrorInfo(
                type=res.error.type, message=res.error.message, traceback=list(res.error.traceback)
            )
        else:
            out.error = _err(_LIMIT_NAMES.get(res.status, "Crashed"), res.message)
    else:
        how = (
            f"killed by {_signal_name(sig)}"
            if sig
            else f"exited with status {os.WEXITSTATUS(status)} without a result"
        )
        out.error = _err("Crashed", how)
    return out


def run_once(request: RunRequest, services: MetaServices | None = None, **kwargs: Any) -> RunReport:
    """Start a sandbox, run one task, stop it. For `plugin-runtime run` and tests."""
    with Sandbox(services=services, **kwargs) as sandbox:
        return sandbox.run(request)


__all__ = ["MetaServices", "Sandbox", "SandboxError", "run_once"]
