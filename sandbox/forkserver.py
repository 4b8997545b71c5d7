"""The warm fork server: one small single-threaded process that forks a fresh jailed child per run,
enforces the wall-time watchdog, kills what a run leaves behind, reaps it and reports how it
ended.

It never sees a run's data. For each run the supervisor passes it (over SCM_RIGHTS) one end of a
socket pair whose other end the supervisor keeps; the child speaks to the supervisor directly on
it, after the jail is entered. So config values, storage, cache and fetch replies of one config
never sit in the memory that the next child is forked from (no state, secret or
monkey-patch survives from one run to the next). What it holds is the runtime, the compiled
plugin code (cached by content hash) and every allowed module, imported up front.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import heapq
import marshal
import math
import os
import select
import signal
import socket
import sys
import time
import types
from collections import deque
from dataclasses import dataclass
from typing import Any

from sandbox import policy, protocol
from sandbox.child import reserve_memory, run_child, warm_up
from sandbox.jail import PR_SET_PDEATHSIG, JailPlan, become_fork_server, prctl, refuse_namespaces

# How often adopted orphans (descendants that left their run's process group, possible only
# where seccomp is unavailable) are looked for and killed.
ORPHAN_SWEEP_S = 0.5
# Control bytes read at once. The frames are small (a run's spec; a plugin's source once), and
# recvmsg allocates its whole buffer per call: 1 MiB cost an mmap and a munmap per run.
CONTROL_READ_BYTES = 64 * 1024
# A plugin's source is compiled in a jailed child of its own, never in the fork server's loop:
# RestrictedPython's transform costs about 1 ms a statement (38 s for a 1 MiB main file), which
# in the loop stopped every run's start, watchdog and exit report meanwhile (red team). These
# bound that child; a compile past them is the plugin's refusal.
COMPILE_TIMEOUT_S = 120.0
COMPILE_MEMORY_MB = 2048
MAX_COMPILED_BYTES = 256 * 1024 * 1024


@dataclass
class Compile:
    """A compile under way in a child, and the runs of that plugin waiting for it."""

    key: str
    filename: str
    pid: int
    fd: int  # the read end of the pipe the child writes its answer to
    deadline: float
    answer: bytearray
    waiting: list[tuple[int, dict[str, Any], int, float]]  # run id, spec, channel fd, received


@dataclass
class ActiveRun:
    run_id: int
    pid: int
    pidfd: int
    started: float
    deadline: float
    killed_for: str | None = None
    timing_slot: int | None = None  # bench-only step timing (sandbox/steptiming.py)


class ForkServer:
    def __init__(
        self,
        control: socket.socket,
        plan: JailPlan,
        allow_unrestricted: bool,
        step_timing: str | None = None,
    ) -> None:
        self.control = control
        self.plan = plan
        self.allow_unrestricted = allow_unrestricted
        self.reader = protocol.FrameReader(max_frame=64 * 1024 * 1024)
        # Run sockets received, in order, one per "run" frame; None where the kernel could not
        # give us one (MSG_CTRUNC: no descriptor left), so that each frame keeps its own.
        self.fds: deque[int | None] = deque()
        # epoll itself, not `selectors`: one register, one unregister and one poll per run, with
        # none of the selector's per-call Python objects.
        self.epoll = select.epoll()
        self.runs: dict[int, ActiveRun] = {}
        self.by_pid: dict[int, ActiveRun] = {}
        self.by_pidfd: dict[int, ActiveRun] = {}
        # (deadline, run id), earliest first; entries of runs already ended are dropped lazily.
        self.deadlines: list[tuple[float, int]] = []
        self.codes: dict[str, types.CodeType | str] = {}  # hash -> code, or the load error
        self.sources: dict[str, str] = {}
        self.compiling: dict[str, Compile] = {}  # plugin key -> its compile under way
        self.compiling_by_fd: dict[int, Compile] = {}
        self.import_guard = policy.ImportGuard()
        self.import_guard.preload()
        # Built once here, before any fork: each child puts them into globals of its own (the
        # builtins dict as its own copy-on-write copy; policy.PreparedGlobals says why).
        self.prepared = policy.PreparedGlobals(self.import_guard)
        reserve_memory()
        # The child's pure steps run here before any fork, on a start frame of no run: every
        # child inherits their bytecode specialised (sandbox/child.py, warm_up).
        warm_up()
        self.pid = os.getpid()
        self.run_seq = 0
        self._last_sweep = 0.0
        # Bench-only (`--step-timing`): None in production, and then nothing below is timed.
        self.timing: Any = None
        if step_timing is not None:
            from sandbox import steptiming
            from sandbox.child import _execute

            self.timing = steptiming.StepTiming(step_timing)
            self._watched = steptiming.watched_codes(JailPlan.enter, run_child, _execute)

    def send(self, message: dict[str, Any]) -> None:
        protocol.send(self.control, message)

    def serve(self) -> None:
        control_fd = self.control.fileno()
        self.epoll.register(control_fd, select.EPOLLIN)
        self.send(
            {
                "t": "hello",
                "layers": self.plan.layers,
                "reasons": self.plan.reasons,
                "posture": self.plan.posture,
                "posture_reason": self.plan.posture_reason,
                "pid": os.getpid(),
            }
        )
        while True:
            exited: list[ActiveRun] = []
            for fd, _ in self.epoll.poll(self._next_timeout()):
                if fd == control_fd:
                    data, fds, flags, _ = socket.recv_fds(self.control, CONTROL_READ_BYTES, 64)
                    if not data:
                        self._shutdown()
                        return
                    # The supervisor sends each run's socket alone with its "run" frame, and a
                    # read stops after the data that carried descriptors: a read holds at most
                    # one run's socket, or lost it (red team: then the next run's socket was
                    # paired with this run's frame, or an IndexError ended the fork server).
                    self.fds.extend(fds if fds or not flags & socket.MSG_CTRUNC else [None])
                    for message in self.reader.feed(data):
                        self._on_control(message)
                elif fd in self.compiling_by_fd:
                    self._on_compile_output(self.compiling_by_fd[fd])
                else:
                    run = self.by_pidfd.get(fd)
                    if run is not None:
                        exited.append(run)
            if exited:
                self._on_exits(exited)
            self._check_deadlines()

    def _next_timeout(self) -> float:
        """Seconds until the earliest deadline of a run not yet killed, or of a compile or a run
        waiting for one (-1: none, wait)."""
        deadlines = self.deadlines
        timeout = 1.0 if self.runs else -1.0
        while deadlines:
            run = self.runs.get(deadlines[0][1])
            if run is not None and run.killed_for is None:
                timeout = max(0.0, deadlines[0][0] - time.monotonic())
                break
            heapq.heappop(deadlines)
        if self.compiling:
            soonest = min(
                min(
                    [job.deadline]
                    + [
                        received + spec["limits"]["timeout_s"]
                        for _, spec, _, received in job.waiting
                    ]
                )
                for job in self.compiling.values()
            )
            left = max(0.0, soonest - time.monotonic())
            timeout = left if timeout < 0 else min(timeout, left)
        return timeout

    def _on_control(self, message: dict[str, Any]) -> None:
        t = message.get("t")
        if t == "run":
            channel_fd = self.fds.popleft() if self.fds else None
            if channel_fd is None:
                self.send(
                    {
                        "t": "exit",
                        "id": message["id"],
                        "failed": "could not start the run: its socket descriptor was not "
                        "received (the fork server has no descriptor left)",
                    }
                )
                return
            self._start_or_fail(message["id"], message["spec"], channel_fd)
        elif t == "kill":
            run = self.runs.get(message["id"])
            if run is not None:
                self._kill(run, str(message.get("reason", "killed")))

    def _start_or_fail(
        self, run_id: int, spec: dict[str, Any], channel_fd: int, received: float | None = None
    ) -> None:
        try:
            self._start(run_id, spec, channel_fd, received)
        except OSError as exc:
            # No fork (a limit of the host, or descendants of runs holding it): this run
            # fails, the fork server goes on.
            try:
                os.close(channel_fd)
            except OSError:
                pass
            self.send({"t": "exit", "id": run_id, "failed": f"could not start the run: {exc}"})

    def _compile_later(
        self, key: str, source: str, spec: dict[str, Any], channel_fd: int, run_id: int
    ) -> None:
        """Queue the run behind its plugin's compile, starting that compile in a jailed child
        if none is under way. The fork server goes on serving every other run meanwhile."""
        received = time.monotonic()
        job = self.compiling.get(key)
        if job is None:
            filename = spec["filename"]
            read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
            self.run_seq += 1
            try:
                pid = os.fork()
            except OSError:
                os.close(read_fd)
                os.close(write_fd)
                raise
            if pid == 0:  # the compiler: never returns
                try:
                    os.close(read_fd)
                    self.plan.enter(
                        write_fd,
                        timeout_s=COMPILE_TIMEOUT_S,
                        cpu_s=COMPILE_TIMEOUT_S,
                        memory_mb=COMPILE_MEMORY_MB,
                        run_seq=self.run_seq,
                        fork_server_pid=self.pid,
                    )
                    answer = memoryview(_compile_answer(source, filename))
                    while answer:
                        answer = answer[os.write(write_fd, answer) :]
                finally:
                    os._exit(0)
            os.close(write_fd)
            os.set_blocking(read_fd, False)
            job = Compile(
                key, filename, pid, read_fd, received + COMPILE_TIMEOUT_S, bytearray(), []
            )
            self.compiling[key] = job
            self.compiling_by_fd[read_fd] = job
            self.epoll.register(read_fd, select.EPOLLIN)
        job.waiting.append((run_id, spec, channel_fd, received))

    def _on_compile_output(self, job: Compile) -> None:
        try:
            chunk = os.read(job.fd, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            job.answer += chunk
            if len(job.answer) > MAX_COMPILED_BYTES:
                self._end_compile(job, f"{job.filename}: cannot be compiled: too large")
            return
        self._end_compile(job, None)

    def _end_compile(self, job: Compile, error: str | None) -> None:
        """The compile ended (or is ended): keep its code or refusal, start its waiting runs."""
        self.epoll.unregister(job.fd)
        os.close(job.fd)
        del self.compiling[job.key]
        del self.compiling_by_fd[job.fd]
        try:
            os.kill(job.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(job.pid, 0)
        self.codes[job.key] = error or _code_from(job.answer, job.filename)
        for run_id, spec, channel_fd, received in job.waiting:
            self._start_or_fail(run_id, spec, channel_fd, received)

    def _start(
        self, run_id: int, spec: dict[str, Any], channel_fd: int, received: float | None = None
    ) -> None:
        key = spec["plugin_key"]
        if "source" in spec:
            self.sources[key] = spec["source"]
        source = self.sources.get(key, "")
        code: types.CodeType | None = None
        if spec.get("unrestricted"):
            if not self.allow_unrestricted:
                os.close(channel_fd)
                self.send({"t": "exit", "id": run_id, "refused": "unrestricted runs are disabled"})
                return
        else:
            compiled = self.codes.get(key)
            if compiled is None:
                self._compile_later(key, source, spec, channel_fd, run_id)
                return
            if isinstance(compiled, str):
                os.close(channel_fd)
                self.send({"t": "exit", "id": run_id, "bad_plugin": compiled})
                return
            code = compiled
        limits = spec["limits"]
        self.run_seq += 1
        timing, slot = self.timing, None
        if timing is not None:
            slot = timing.take_slot()
            t0 = time.thread_time_ns()
        # A run that waited for its plugin's compile: its wall time counts from its arrival.
        started = time.monotonic() if received is None else received
        pid = os.fork()
        if pid == 0:  # the child: never returns
            gc.disable()
            if slot is not None:
                from sandbox.steptiming import start_child

                start_child(timing.area, slot, self._watched)
            try:
                self.plan.enter(
                    channel_fd,
                    timeout_s=limits["timeout_s"],
                    cpu_s=limits["cpu_s"],
                    memory_mb=limits["memory_mb"],
                    run_seq=self.run_seq,
                    fork_server_pid=self.pid,
                )
                # The family and type given: the socket module need not ask the kernel.
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, channel_fd)
                run_child(sock, code, spec, source, self.prepared)
            except BaseException as exc:
                try:
                    protocol.send(
                        socket.socket(fileno=channel_fd),
                        {
                            "t": "result",
                            "status": "crashed",
                            "message": f"jail setup failed: {exc!r}",
                        },
                    )
                finally:
                    os._exit(70)
            os._exit(0)
        if timing is not None:
            t1 = time.thread_time_ns()
        os.close(channel_fd)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as exc:  # cannot watch it: it does not run
            self._killpg(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            self.send({"t": "exit", "id": run_id, "failed": f"could not watch the run: {exc}"})
            return
        run = ActiveRun(
            run_id=run_id,
            pid=pid,
            pidfd=pidfd,
            started=started,
            deadline=started + limits["timeout_s"],
            timing_slot=slot,
        )
        self.runs[run_id] = run
        self.by_pid[pid] = run
        self.by_pidfd[pidfd] = run
        heapq.heappush(self.deadlines, (run.deadline, run_id))
        self.epoll.register(pidfd, select.EPOLLIN)
        if timing is not None:
            t2 = time.thread_time_ns()
            timing.server_ns["fork"] += t1 - t0
            timing.server_ns["prepare"] += t2 - t1

    def _on_exits(self, exited: list[ActiveRun]) -> None:
        """Reap the runs whose pidfds became readable in one poll and report them to the
        supervisor in one write."""
        if self.timing is not None:
            t0 = time.thread_time_ns()
        frames = []
        for run in exited:
            # Whatever the run left behind in its process group, killed while the run's own
            # process is an unreaped zombie: its pid, and so the group's id, cannot have been
            # reused yet (and the group is never empty, so no ProcessLookupError to raise).
            self._killpg(run.pid)
            try:
                _, status, rusage = os.wait4(run.pid, 0)
            except ChildProcessError:
                status, rusage = 0, None
            ended = time.monotonic()
            self.epoll.unregister(run.pidfd)
            os.close(run.pidfd)
            del self.runs[run.run_id]
            del self.by_pidfd[run.pidfd]
            self.by_pid.pop(run.pid, None)
            frames.append(
                _exit_frame(
                    run.run_id,
                    status,
                    run.killed_for,
                    round((ended - run.started) * 1000.0, 3),
                    round((rusage.ru_utime + rusage.ru_stime) * 1000.0, 3) if rusage else 0.0,
                    int(rusage.ru_maxrss) if rusage else 0,
                    run.deadline - run.started,
                )
            )
            if self.timing is not None:
                self.timing.collect(run.timing_slot, rusage)
        self.control.sendall(b"".join(frames))
        if self.timing is not None:
            self.timing.server_ns["exit"] += time.thread_time_ns() - t0

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for job in list(self.compiling.values()):
            if now >= job.deadline:
                self._end_compile(
                    job, f"{job.filename}: cannot be compiled: more than {COMPILE_TIMEOUT_S:g} s"
                )
                continue
            for waiting in [w for w in job.waiting if now >= w[3] + w[1]["limits"]["timeout_s"]]:
                job.waiting.remove(waiting)
                run_id, spec, channel_fd, received = waiting
                os.close(channel_fd)
                timeout_s = float(spec["limits"]["timeout_s"])
                self.control.sendall(
                    _exit_frame(run_id, 0, "timeout", (now - received) * 1000.0, 0.0, 0, timeout_s)
                )
        deadlines = self.deadlines
        while deadlines and deadlines[0][0] <= now:
            _, run_id = heapq.heappop(deadlines)
            run = self.runs.get(run_id)
            if run is not None and run.killed_for is None:
                self._kill(run, "timeout")
        if now - self._last_sweep > ORPHAN_SWEEP_S:
            self._last_sweep = now
            self._reap_orphans()

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
        compilers = {job.pid for job in self.compiling.values()}
        for pid in _children_of(os.getpid()):
            if pid in self.by_pid or pid in compilers:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, os.WNOHANG)
            except (ProcessLookupError, ChildProcessError):
                pass

    def _shutdown(self) -> None:
        for run in list(self.runs.values()):
            self._kill(run, "timeout")
        for job in self.compiling.values():
            try:
                os.kill(job.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


_EXIT_FRAME = (
    b'{"t":"exit","id":%d,"status":%d,"killed_for":null,"duration_ms":%r,"cpu_ms":%r,'
    b'"max_rss_kb":%d,"timeout_s":%r}'
)


def _exit_frame(
    run_id: int,
    status: int,
    killed_for: str | None,
    duration_ms: float,
    cpu_ms: float,
    max_rss_kb: int,
    timeout_s: float,
) -> bytes:
    """The "exit" report of one run: the bytes `protocol.encode` would give, formatted directly
    in the common case (about 30 us instead of 95 in a fork server whose pages every fork has
    just made copy-on-write); through `protocol.encode` otherwise."""
    if (
        killed_for is None
        and type(run_id) is int
        and type(status) is int
        and type(max_rss_kb) is int
        and all(type(v) is float and math.isfinite(v) for v in (duration_ms, cpu_ms, timeout_s))
    ):
        body = _EXIT_FRAME % (run_id, status, duration_ms, cpu_ms, max_rss_kb, timeout_s)
        return protocol.HEADER.pack(len(body)) + body
    return protocol.encode(
        {
            "t": "exit",
            "id": run_id,
            "status": status,
            "killed_for": killed_for,
            "duration_ms": duration_ms,
            "cpu_ms": cpu_ms,
            "max_rss_kb": max_rss_kb,
            "timeout_s": timeout_s,
        }
    )


def _compile_answer(source: str, filename: str) -> bytes:
    """In the compiler child: b"C" + the marshalled code, or b"E" + the refusal."""
    try:
        return b"C" + marshal.dumps(policy.compile_plugin(source, filename))
    except policy.PluginCodeError as exc:
        message = str(exc)
    except Exception as exc:  # whatever the source does to the compiler: that plugin's
        message = f"{filename}: cannot be compiled: {type(exc).__name__}: {exc}"
    return b"E" + message.encode("utf-8", "replace")


def _code_from(answer: bytearray, filename: str) -> types.CodeType | str:
    """The code, or the refusal, a compiler child answered (a child that died answered
    nothing: out of memory or CPU)."""
    if answer[:1] == b"E":
        return bytes(answer[1:]).decode("utf-8", "replace")
    if answer[:1] == b"C":
        try:
            code = marshal.loads(bytes(answer[1:]))
        except Exception:  # noqa: BLE001 - cut short: the child died writing it
            code = None
        if type(code) is types.CodeType:
            return code
    return f"{filename}: cannot be compiled: the compiler ran out of memory or time"


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
    parser.add_argument("--refuse-namespaces", action="store_true")
    parser.add_argument("--step-timing", metavar="PATH", help="bench only: sandbox/steptiming.py")
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.fd)
    supervisor = os.getppid()
    become_fork_server()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if args.refuse_namespaces:
        refuse_namespaces()
    plan = JailPlan.detect(enter_netns=not args.no_netns)
    prctl(PR_SET_PDEATHSIG, 9)  # again: entering a user namespace may have cleared it
    if os.getppid() != supervisor:
        sys.exit(1)  # the supervisor died meanwhile
    # Nothing of any environment reaches a child (the supervisor already passed a clean one).
    os.environ.clear()
    server = ForkServer(control, plan, args.allow_unrestricted, args.step_timing)
    # Everything imported so far is shared with every child: keep the collector from touching
    # (and so copying) those pages in each child.
    gc.freeze()
    try:
        server.serve()
        if server.timing is not None:
            server.timing.finish()
    finally:
        plan.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
