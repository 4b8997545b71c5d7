"""The warm fork server: one small single-threaded process that forks a fresh jailed child per run,
relays its frames, enforces the wall-time watchdog, reaps it and reports one outcome.

It is started by `sandbox.client.Sandbox` with a clean environment and a single socket to the
supervisor. It compiles each plugin once (cached by content hash) and imports every allowed
module up front, so a child only forks, jails itself and executes.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import selectors
import signal
import socket
import sys
import time
import types
from dataclasses import dataclass, field
from typing import Any

from sandbox import policy, protocol
from sandbox.child import run_child
from sandbox.jail import JailPlan, become_fork_server

GRACE_S = 0.2  # after the child exits, how long to wait for its last frames


@dataclass
class ActiveRun:
    run_id: int
    pid: int
    pidfd: int
    sock: socket.socket
    started: float
    deadline: float
    cpu_s: float
    reader: protocol.FrameReader = field(default_factory=protocol.FrameReader)
    logs: list[dict[str, str]] = field(default_factory=list)
    fetch_calls: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    killed_for: str | None = None
    exit_status: int | None = None
    rusage: Any = None
    exited_at: float | None = None
    sock_closed: bool = False


class ForkServer:
    def __init__(self, control: socket.socket, plan: JailPlan, allow_unrestricted: bool) -> None:
        self.control = control
        self.plan = plan
        self.allow_unrestricted = allow_unrestricted
        self.reader = protocol.FrameReader(max_frame=64 * 1024 * 1024)
        self.selector = selectors.DefaultSelector()
        self.runs: dict[int, ActiveRun] = {}
        self.by_pid: dict[int, ActiveRun] = {}
        self.codes: dict[str, types.CodeType | str] = {}  # hash -> code, or the load error
        self.sources: dict[str, str] = {}
        self.import_guard = policy.ImportGuard()
        self.import_guard.preload()
        self.run_seq = 0
        self._last_sweep = 0.0

    # -- control channel -------------------------------------------------------------------
    def send(self, message: dict[str, Any]) -> None:
        self.control.setblocking(True)
        protocol.send(self.control, message)

    def serve(self) -> None:
        self.selector.register(self.control, selectors.EVENT_READ, ("control", None))
        self.send({"t": "hello", "layers": self.plan.layers, "reasons": self.plan.reasons, "pid": os.getpid()})
        while True:
            timeout = self._next_timeout()
            for key, _ in self.selector.select(timeout):
                kind, run = key.data
                if kind == "control":
                    data = self.control.recv(1 << 20)
                    if not data:
                        self._shutdown()
                        return
                    for message in self.reader.feed(data):
                        self._on_control(message)
                elif kind == "child":
                    self._on_child_data(run)
                elif kind == "exit":
                    self._on_exit(run)
            self._check_deadlines()

    def _next_timeout(self) -> float | None:
        now = time.monotonic()
        deadlines = []
        for run in self.runs.values():
            if run.exited_at is not None:
                deadlines.append(run.exited_at + GRACE_S)
            elif run.killed_for is None:
                deadlines.append(run.deadline)
        if not deadlines:
            return 1.0 if self.runs else None
        return max(0.0, min(deadlines) - now)

    def _on_control(self, message: dict[str, Any]) -> None:
        t = message.get("t")
        if t == "run":
            self._start(message)
        elif t == "reply":
            run = self.runs.get(message["id"])
            if run is not None and not run.sock_closed:
                try:
                    run.sock.setblocking(True)
                    protocol.send(run.sock, {"t": "reply", "call": message["call"],
                                             "value": message.get("value"), "error": message.get("error")})
                except OSError:
                    pass
        elif t == "plugin":
            self.sources[message["key"]] = message["source"]
        elif t == "ping":
            self.send({"t": "pong"})

    def _compiled(self, key: str, source: str, filename: str) -> types.CodeType | str:
        if key not in self.codes:
            try:
                self.codes[key] = policy.compile_plugin(source, filename)
            except policy.PluginCodeError as exc:
                self.codes[key] = str(exc)
        return self.codes[key]

    # -- one run ---------------------------------------------------------------------------
    def _start(self, message: dict[str, Any]) -> None:
        run_id = message["id"]
        spec = message["spec"]
        key = spec["plugin_key"]
        if "source" in spec:
            self.sources[key] = spec["source"]
        source = self.sources.get(key, "")
        unrestricted = spec.get("unrestricted_source")
        if unrestricted is not None and not self.allow_unrestricted:
            self._report(run_id, {"outcome": "bad_plugin", "error": {
                "type": "SecurityError", "message": "unrestricted runs are disabled", "traceback": []}})
            return
        code: types.CodeType | None = None
        if unrestricted is None:
            compiled = self._compiled(key, source, spec["filename"])
            if isinstance(compiled, str):
                self._report(run_id, {"outcome": "bad_plugin", "duration_ms": 0.0, "error": {
                    "type": "PluginCodeError", "message": compiled, "traceback": []}})
                return
            code = compiled
        spec["source"] = source
        limits = spec["limits"]
        parent_sock, child_sock = socket.socketpair()
        self.run_seq += 1
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            gc.disable()
            try:
                parent_sock.close()
                self.plan.enter(
                    child_sock.fileno(),
                    timeout_s=limits["timeout_s"],
                    cpu_s=limits["cpu_s"],
                    memory_mb=limits["memory_mb"],
                    run_seq=self.run_seq,
                )
                run_child(child_sock, code, spec, self.import_guard)
            except BaseException as exc:
                try:
                    protocol.send(child_sock, {"t": "result", "status": "crashed",
                                               "message": f"jail setup failed: {exc!r}"})
                finally:
                    os._exit(70)
            os._exit(0)
        child_sock.close()
        parent_sock.setblocking(False)
        pidfd = os.pidfd_open(pid)
        run = ActiveRun(
            run_id=run_id,
            pid=pid,
            pidfd=pidfd,
            sock=parent_sock,
            started=started,
            deadline=started + limits["timeout_s"],
            cpu_s=limits["cpu_s"],
        )
        self.runs[run_id] = run
        self.by_pid[pid] = run
        self.selector.register(parent_sock, selectors.EVENT_READ, ("child", run))
        self.selector.register(pidfd, selectors.EVENT_READ, ("exit", run))

    def _on_child_data(self, run: ActiveRun) -> None:
        try:
            data = run.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_sock(run)
            self._maybe_finish(run)
            return
        try:
            frames = run.reader.feed(data)
        except (protocol.FrameTooLarge, ValueError):
            self._kill(run, "output_limit")
            self._close_sock(run)
            return
        for frame in frames:
            t = frame.get("t")
            if t == "log" and run.result is None:
                run.logs.append({"level": str(frame.get("level", "info")), "message": str(frame.get("message", ""))})
            elif t == "call":
                op = frame.get("op")
                if op == "fetch":
                    run.fetch_calls.append(dict(frame.get("args") or {}))
                self.send({"t": "call", "id": run.run_id, "call": frame.get("call"), "op": op,
                           "args": frame.get("args") or {}})
            elif t == "result" and run.result is None:
                run.result = frame

    def _close_sock(self, run: ActiveRun) -> None:
        if not run.sock_closed:
            run.sock_closed = True
            self.selector.unregister(run.sock)
            run.sock.close()

    def _on_exit(self, run: ActiveRun) -> None:
        try:
            _, status, rusage = os.wait4(run.pid, 0)
        except ChildProcessError:
            status, rusage = 0, None
        run.exit_status = status
        run.rusage = rusage
        run.exited_at = time.monotonic()
        self.selector.unregister(run.pidfd)
        os.close(run.pidfd)
        # Kill whatever the run left behind in its process group, then drain the socket.
        self._killpg(run.pid)
        self._maybe_finish(run)

    def _maybe_finish(self, run: ActiveRun, force: bool = False) -> None:
        if run.exited_at is None:
            return
        if not run.sock_closed and not force:
            return
        self._close_sock(run)
        self._finish(run)

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep > 1.0:
            self._last_sweep = now
            self._reap_orphans()
        for run in list(self.runs.values()):
            if run.exited_at is None and run.killed_for is None and now >= run.deadline:
                self._kill(run, "timeout")
            elif run.exited_at is not None and now >= run.exited_at + GRACE_S:
                self._maybe_finish(run, force=True)

    def _killpg(self, pgid: int) -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _kill(self, run: ActiveRun, reason: str) -> None:
        if run.killed_for is None:
            run.killed_for = reason
        self._killpg(run.pid)
        try:
            os.kill(run.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _reap_orphans(self) -> None:
        """Kill and reap any process adopted by us that is not a run's own child: a descendant
        that escaped its process group (double fork + setsid where seccomp is unavailable)."""
        for pid in _children_of(os.getpid()):
            if pid in self.by_pid:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, os.WNOHANG)
            except (ProcessLookupError, ChildProcessError):
                pass

    def _finish(self, run: ActiveRun) -> None:
        del self.runs[run.run_id]
        self.by_pid.pop(run.pid, None)
        self._reap_orphans()
        duration_ms = ((run.exited_at or time.monotonic()) - run.started) * 1000.0
        cpu_ms = 0.0
        max_rss_kb = 0
        if run.rusage is not None:
            cpu_ms = (run.rusage.ru_utime + run.rusage.ru_stime) * 1000.0
            max_rss_kb = int(run.rusage.ru_maxrss)
        status = run.exit_status or 0
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        res = run.result
        outcome: dict[str, Any] = {
            "duration_ms": round(duration_ms, 3),
            "cpu_ms": round(cpu_ms, 3),
            "max_rss_kb": max_rss_kb,
            "logs": run.logs,
            "fetch_calls": run.fetch_calls,
            "signal": sig,
            "error": None,
        }
        if run.killed_for == "timeout":
            outcome["outcome"] = "timeout"
            outcome["error"] = _err("Timeout", f"wall time above {run.deadline - run.started:g} s; killed")
        elif run.killed_for == "output_limit":
            outcome["outcome"] = "output_limit"
            outcome["error"] = _err("OutputLimit", "a frame from the child exceeded the size cap; killed")
        elif sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_ms >= run.cpu_s * 1000.0 * 0.95):
            outcome["outcome"] = "cpu_limit"
            outcome["error"] = _err("CpuLimit", f"CPU time above {run.cpu_s:g} s; killed")
        elif res is not None and res.get("status") in ("ok", "error", "memory_limit", "output_limit", "bad_plugin", "crashed"):
            kind = res["status"]
            outcome["outcome"] = kind
            if kind == "ok":
                outcome["result"] = res.get("result")
                outcome["storage_writes"] = res.get("writes") or {}
                outcome["storage_deletes"] = res.get("deletes") or []
            elif kind == "error":
                outcome["error"] = res.get("error")
            else:
                names = {"memory_limit": "MemoryLimit", "output_limit": "OutputLimit",
                         "bad_plugin": "BadPlugin", "crashed": "Crashed"}
                outcome["error"] = _err(names[kind], str(res.get("message", "")))
        else:
            outcome["outcome"] = "crashed"
            how = f"killed by signal {signal.Signals(sig).name}" if sig else f"exited with status {os.WEXITSTATUS(status)} without a result"
            outcome["error"] = _err("Crashed", how)
        self._report(run.run_id, outcome)

    def _report(self, run_id: int, outcome: dict[str, Any]) -> None:
        outcome.setdefault("layers", self.plan.layers)
        self.send({"t": "done", "id": run_id, "outcome": outcome})

    def _shutdown(self) -> None:
        for run in list(self.runs.values()):
            self._kill(run, "timeout")


def _err(kind: str, message: str) -> dict[str, Any]:
    return {"type": kind, "message": message, "traceback": []}


def _children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def plugin_key(source: str, filename: str) -> str:
    return hashlib.sha256(f"{filename}\0{source}".encode()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sandbox.forkserver")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--no-netns", action="store_true")
    parser.add_argument("--allow-unrestricted", action="store_true")
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.fd)
    become_fork_server()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    plan = JailPlan.detect(enter_netns=not args.no_netns)
    server = ForkServer(control, plan, args.allow_unrestricted)
    # Everything imported so far is shared with every child: keep the collector from touching
    # (and so copying) those pages in each child.
    gc.freeze()
    try:
        server.serve()
    finally:
        if plan.empty_root:
            try:
                os.rmdir(plan.empty_root)
            except OSError:
                pass
    sys.exit(0)


if __name__ == "__main__":
    main()
