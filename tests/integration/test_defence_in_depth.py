"""Layers 2-4 under attack, with layer 1 gone: each test runs *unrestricted* Python inside the
jailed child (the test-only `unrestricted_source` of a `Sandbox(allow_unrestricted=True)`) and
tries one class of attack that SECURITY.md says the jail stops. Every payload reports what it got
as "ok ..." (the attack worked) or "denied ..." (it did not), and the test asserts on those.

A test of a layer skips only when this host lacks that layer (predicted by `host_layers()`,
checked against what the fork server reports). CI runs this file in every posture (root; not root
with user namespaces; not root with them refused, `PLUGIN_RUNTIME_REFUSE_USERNS=1`) and sets
`PLUGIN_RUNTIME_EXPECT_POSTURE`: a posture that lacks a layer it should have fails there.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import tempfile
import textwrap
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from sandbox import Plugin, RunReport, RunRequest, Sandbox, load_plugin
from sandbox.jail import (
    NOFILE_PER_RUN,
    NPROC_PER_RUN,
    SIGPENDING_PER_RUN,
    host_layers,
    host_posture,
)
from sandbox.layers import ROOT, UNPRIVILEGED, USERNS
from sandbox.manifest import Limits

SECRET_URL = f"postgresql://runtime:s3cret-{uuid.uuid4().hex}@db.internal:5432/runtime"
SECRET_ENV = {
    "PLUGIN_RUNTIME_DATABASE_URL": SECRET_URL,
    "DATABASE_URL": SECRET_URL,
    "PGPASSWORD": "pg-" + SECRET_URL[-24:],
}
LIMITS = Limits(timeout_s=10.0, cpu_s=5.0, memory_mb=256)

# Shared by every payload: run one attempt, report "ok <value>" or "denied <errno/type>".
PRELUDE = '''
import ctypes, errno, os, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)

def attempt(fn):
    try:
        value = fn()
    except OSError as exc:
        return "denied " + errno.errorcode.get(exc.errno or 0, str(exc.errno))
    except Exception as exc:
        return "denied " + type(exc).__name__
    return "ok " + repr(value)[:300]

def sys_call(fn, *args):
    """A libc call: raise OSError on -1 like os.* does."""
    ret = fn(*args)
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret
'''


@pytest.fixture(scope="module")
def sandbox(
    tmp_path_factory: pytest.TempPathFactory, start_sandbox: Callable[..., Sandbox]
) -> Iterator[Sandbox]:
    """One sandbox for the module, started while the test process holds secrets in its
    environment and an open file, so a leak of either would show."""
    secret_file = tmp_path_factory.mktemp("secrets") / "secret.txt"
    secret_file.write_text(SECRET_URL)
    with pytest.MonkeyPatch.context() as mp, open(secret_file) as held:
        for key, value in SECRET_ENV.items():
            mp.setenv(key, value)
        assert held.fileno() > 2
        yield start_sandbox(allow_unrestricted=True)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Plugin:
    directory = tmp_path_factory.mktemp("plugin")
    (directory / "plugin.json").write_text(
        json.dumps({"name": "attacker", "version": "1.0.0", "main": "main.py"})
    )
    (directory / "main.py").write_text("def run_every_minute(meta):\n    return 'honest'\n")
    return load_plugin(directory)


def attack(
    sb: Sandbox,
    plugin: Plugin,
    body: str,
    *,
    limits: Limits = LIMITS,
    config: dict[str, Any] | None = None,
) -> RunReport:
    """Run `body` (which defines run_every_minute(meta)) as plain Python in the jail."""
    source = PRELUDE + textwrap.dedent(body)
    request = RunRequest(
        plugin=plugin,
        task="run_every_minute",
        limits=limits,
        config=config or {},
        unrestricted_source=source,
    )
    return sb.run(request)


def results(outcome: RunReport) -> dict[str, Any]:
    assert outcome.outcome == "ok", (outcome.outcome, outcome.error)
    assert isinstance(outcome.result, dict)
    return outcome.result


def assert_all_denied(report: dict[str, Any]) -> None:
    succeeded = {k: v for k, v in report.items() if not str(v).startswith("denied")}
    print(json.dumps(report, indent=1))  # shown on failure: which way each attempt went
    assert not succeeded, f"attacks that worked: {succeeded}"


HOST_LAYERS = host_layers()
SYSCALL_NUMBERS = {
    "x86_64": {"bpf": 321, "open_by_handle_at": 304, "clone": 56},
    "aarch64": {"bpf": 280, "open_by_handle_at": 265, "clone": 220},
}


def requires(*layers: str) -> pytest.MarkDecorator:
    """A layer's test runs wherever the host can have the layer (on CI, root on Linux 6.x: all of
    them); it is skipped only where the host cannot."""
    missing = [layer for layer in layers if not HOST_LAYERS.get(layer)]
    return pytest.mark.skipif(bool(missing), reason=f"this host lacks the layer(s) {missing}")


def test_predicted_layers_are_the_ones_a_fork_server_reports(sandbox: Sandbox) -> None:
    assert sandbox.layers == HOST_LAYERS
    assert sandbox.posture == host_posture()


# The layers each posture has on a Linux >= 6.12 host with libseccomp (CI's): what SECURITY.md's
# posture table claims. Only uid_drop (needs a range of host uids) is lost to a user namespace.
NAMESPACE_LAYERS = {"netns", "ipcns", "chroot"}
POSTURE_LACKS = {ROOT: set(), USERNS: {"uid_drop"}, UNPRIVILEGED: {"uid_drop"} | NAMESPACE_LAYERS}


def test_the_posture_has_its_layers(sandbox: Sandbox) -> None:
    """Where CI says which posture this run is in, the fork server must be in it and have every
    layer of it: a layer lost (a kernel, a package, a host setting) fails, it does not skip."""
    expected = os.environ.get("PLUGIN_RUNTIME_EXPECT_POSTURE")
    if expected:
        assert sandbox.posture == expected, sandbox.posture_reason
    missing = {name for name, on in sandbox.layers.items() if not on}
    if expected or all(HOST_LAYERS[k] for k in ("seccomp", "landlock_scope")):
        assert missing == POSTURE_LACKS[sandbox.posture], sandbox.layer_reasons
    assert sandbox.posture_reason
    for name in missing:
        assert sandbox.layer_reasons.get(name), f"layer {name} is off without a reason"


def wait_gone(pids: list[int], timeout: float = 3.0) -> list[int]:
    """The pids that are still alive (and not zombies) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _alive(p)]
        if alive:
            time.sleep(0.05)
    return alive


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_fork_server_healthy(sb: Sandbox, plugin: Plugin, pid: int | None) -> None:
    assert pid is not None and sb.fork_server_pid == pid, "the fork server was restarted"
    assert psutil.pid_exists(pid)
    outcome = sb.run(RunRequest(plugin=plugin, task="run_every_minute", limits=LIMITS))
    assert outcome.outcome == "ok" and outcome.result == "honest", outcome


def test_the_harness_sees_an_attack_succeed(sandbox: Sandbox, plugin: Plugin) -> None:
    """A positive control: unrestricted code really is unrestricted (it can import os, call
    getpid, make an AF_UNIX socket), so every "denied" below is the jail's doing."""
    report = results(
        attack(
            sandbox,
            plugin,
            """
        def run_every_minute(meta):
            return {"pid": attempt(os.getpid), "pipe": attempt(lambda: len(os.pipe()))}
    """,
        )
    )
    assert report["pid"].startswith("ok ") and report["pipe"] == "ok 2"


# -- layer 2: the process -----------------------------------------------------------------------


@requires("clean_env")
def test_no_secret_in_the_environment(sandbox: Sandbox, plugin: Plugin) -> None:
    assert os.environ["PLUGIN_RUNTIME_DATABASE_URL"] == SECRET_URL  # the test process has it
    outcome = attack(
        sandbox,
        plugin,
        """
        def raw_environ():  # libc's own char **environ, not Python's copy
            env = ctypes.POINTER(ctypes.c_char_p).in_dll(libc, "environ")
            out = []
            while env and env[len(out)] is not None:
                out.append(env[len(out)])
            return out

        def run_every_minute(meta):
            pid = meta.config["supervisor_pid"]
            return {
                "environ": dict(os.environ),
                "getenv": os.getenv("PLUGIN_RUNTIME_DATABASE_URL"),
                "raw_environ": attempt(raw_environ),
                "proc_self_environ": attempt(lambda: open("/proc/self/environ", "rb").read()),
                "proc_parent_environ": attempt(lambda: open(f"/proc/{os.getppid()}/environ", "rb").read()),
                "proc_supervisor_environ": attempt(lambda: open(f"/proc/{pid}/environ", "rb").read()),
                "proc_supervisor_cmdline": attempt(lambda: open(f"/proc/{pid}/cmdline", "rb").read()),
            }
    """,
        config={"supervisor_pid": os.getpid()},
    )
    report = results(outcome)
    assert report.pop("environ") == {}
    assert report.pop("getenv") is None
    assert report.pop("raw_environ") == "ok []"
    assert_all_denied(report)
    assert "s3cret" not in json.dumps(outcome.to_json())


@requires("clean_env")
def test_no_secret_anywhere_in_the_child_memory(sandbox: Sandbox, plugin: Plugin) -> None:
    """Scan the child's own heap (every page near its live objects) for the supervisor's
    database URL. The fork server was started with a clean environment, so it was never there.
    The scan must find exactly one copy: the needle it built itself (proving that it works)."""
    report = results(attack(sandbox, plugin, SCAN_MEMORY, config={"reversed": SECRET_URL[::-1]}))
    assert report["scanned_pages"] > 100
    assert report["hits"] == 1, report


# The needle arrives reversed (so the config itself is no copy) and is rebuilt once in memory.
SCAN_MEMORY = """
def run_every_minute(meta):
    import gc
    needle = meta.config["reversed"].encode()[::-1]
    r, w = os.pipe()
    libc.write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    def mapped(addr):  # write(2) of one byte says EFAULT instead of crashing on unmapped memory
        if libc.write(w, addr, 1) == 1:
            os.read(r, 1)
            return True
        return False
    regions = {id(o) >> 20 for o in gc.get_objects()}
    pages = sorted({(mb << 20) + (page << 12) for base in regions
                    for mb in range(base - 8, base + 9) for page in range(256)})
    hits = scanned = 0
    tail, previous = b"", None
    for addr in pages:
        if addr <= 0 or not mapped(addr):
            continue
        if previous != addr - 4096:
            tail = b""  # not contiguous with the last page read
        scanned += 1
        data = ctypes.string_at(addr, 4096)
        hits += (tail + data).count(needle) - tail.count(needle)
        tail, previous = data[-len(needle):], addr
    return {"scanned_pages": scanned, "hits": hits}
"""


def test_other_configs_secrets_not_in_a_later_child(sandbox: Sandbox, plugin: Plugin) -> None:
    other = f"api-key-of-another-config-{uuid.uuid4().hex}"
    honest = sandbox.run(
        RunRequest(plugin=plugin, task="run_every_minute", limits=LIMITS, config={"api_key": other})
    )
    assert honest.outcome == "ok"
    report = results(attack(sandbox, plugin, SCAN_MEMORY, config={"reversed": other[::-1]}))
    assert report["hits"] == 1, report


@requires("session")
def test_no_inherited_file_descriptors(sandbox: Sandbox, plugin: Plugin) -> None:
    """Only the run's own channel to the fork server is open: not the supervisor's files, not
    its control socket, not stdin/stdout/stderr."""
    report = results(
        attack(
            sandbox,
            plugin,
            """
        import stat
        def run_every_minute(meta):
            open_fds = {}
            for fd in range(0, 1024):
                try:
                    st = os.fstat(fd)
                except OSError:
                    continue
                open_fds[str(fd)] = "socket" if stat.S_ISSOCK(st.st_mode) else oct(st.st_mode)
            return {"fds": open_fds, "proc_fd": attempt(lambda: os.listdir("/proc/self/fd"))}
    """,
        )
    )
    assert len(report["fds"]) == 1, report["fds"]
    assert list(report["fds"].values()) == ["socket"]
    assert report["proc_fd"].startswith("denied")


@requires("seccomp")
def test_cannot_kill_the_fork_server_or_the_supervisor(sandbox: Sandbox, plugin: Plugin) -> None:
    fork_server = sandbox.fork_server_pid
    report = results(
        attack(
            sandbox,
            plugin,
            """
        import signal
        def run_every_minute(meta):
            ppid, test_pid = os.getppid(), meta.config["test_pid"]
            return {
                "kill_parent": attempt(lambda: os.kill(ppid, signal.SIGKILL)),
                "kill_test_process": attempt(lambda: os.kill(test_pid, signal.SIGKILL)),
                "killpg_parent": attempt(lambda: os.killpg(os.getpgid(ppid), signal.SIGKILL)),
                "kill_everyone": attempt(lambda: os.kill(-1, signal.SIGKILL)),
                "tgkill_parent": attempt(lambda: sys_call(libc.syscall, 234, ppid, ppid, 9)),
                "pidfd_open_parent": attempt(lambda: os.pidfd_open(ppid)),
                "sigqueue_parent": attempt(lambda: sys_call(libc.sigqueue, ppid, 9, 0)),
                "stop_parent": attempt(lambda: os.kill(ppid, signal.SIGSTOP)),
            }
    """,
            config={"test_pid": os.getpid()},
        )
    )
    assert_all_denied(report)
    assert_fork_server_healthy(sandbox, plugin, fork_server)


@requires("seccomp")
def test_cannot_signal_through_a_descriptor_owner(sandbox: Sandbox, plugin: Plugin) -> None:
    """Red team: a descriptor owned by another process (F_SETOWN, F_SETOWN_EX, FIOSETOWN,
    SIOCSPGRP) with O_ASYNC and F_SETSIG makes the kernel signal that process when the descriptor
    is ready, with no kill call. As a non-root supervisor (same uid as its runs, no Landlock
    signal scope) a run SIGSTOPped the fork server this way, wedging every run."""
    fork_server = sandbox.fork_server_pid
    report = results(
        attack(
            sandbox,
            plugin,
            """
        import fcntl, signal, struct
        def own_and_fire(set_owner):
            r, w = os.pipe()
            set_owner(r)
            fcntl.fcntl(r, 10, signal.SIGSTOP)  # F_SETSIG
            fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)
            os.write(w, b"x")
            return "fired"
        def channel():
            for fd in range(3, 64):
                try:
                    s = socket.socket(fileno=os.dup(fd))
                    s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
                    return s
                except OSError:
                    continue
        def run_every_minute(meta):
            ppid, test_pid = os.getppid(), meta.config["test_pid"]
            ex = struct.pack("ii", 1, ppid)  # F_OWNER_PID
            sock = channel()
            return {
                "setown_parent": attempt(lambda: own_and_fire(
                    lambda fd: fcntl.fcntl(fd, fcntl.F_SETOWN, ppid))),
                "setown_test_process": attempt(lambda: own_and_fire(
                    lambda fd: fcntl.fcntl(fd, fcntl.F_SETOWN, test_pid))),
                "setown_group": attempt(lambda: own_and_fire(
                    lambda fd: fcntl.fcntl(fd, fcntl.F_SETOWN, -os.getpgid(ppid)))),
                "setown_ex_parent": attempt(lambda: own_and_fire(
                    lambda fd: fcntl.fcntl(fd, 15, ex))),
                "fiosetown_channel": attempt(lambda: fcntl.ioctl(
                    sock.fileno(), 0x8901, struct.pack("i", ppid))),
                "siocspgrp_channel": attempt(lambda: fcntl.ioctl(
                    sock.fileno(), 0x8902, struct.pack("i", ppid))),
            }
    """,
            config={"test_pid": os.getpid()},
        )
    )
    assert_all_denied(report)
    assert psutil.Process(fork_server).status() != psutil.STATUS_STOPPED  # type: ignore[arg-type]
    assert_fork_server_healthy(sandbox, plugin, fork_server)


@requires("uid_drop", "no_new_privs")
def test_runs_get_an_unprivileged_uid(sandbox: Sandbox, plugin: Plugin) -> None:
    report = results(
        attack(
            sandbox,
            plugin,
            """
        def run_every_minute(meta):
            return {
                "uid": os.getresuid(), "gid": os.getresgid(), "groups": os.getgroups(),
                "setuid_root": attempt(lambda: os.setuid(0)),
                "setresuid_root": attempt(lambda: os.setresuid(0, 0, 0)),
                "setgid_root": attempt(lambda: os.setgid(0)),
                "no_new_privs": sys_call(libc.prctl, 39, 0, 0, 0, 0),
            }
    """,
        )
    )
    uid = report.pop("uid")
    assert uid[0] == uid[1] == uid[2] and uid[0] != 0 and uid[0] != os.getuid()
    assert 0 not in report.pop("gid")
    assert report.pop("groups") == []
    assert report.pop("no_new_privs") == 1
    assert_all_denied(report)


# -- layer 3: limits and the watchdog ---------------------------------------------------------


FORK_TREE = """
import signal
def run_every_minute(meta):
    r, w = os.pipe()
    report = {}
    try:
        child = os.fork()
    except OSError as exc:  # no process budget left (the unprivileged posture): nothing to kill
        meta.logger.info("pids")
        if meta.config.get("hang"):
            time.sleep(60)
        return {"fork": "denied " + errno.errorcode.get(exc.errno, "?")}
    if child == 0:
        # child: try to leave the session, then double fork a grandchild that hides
        try:
            os.setsid()
            os.write(w, b"setsid=ok\\n")
        except OSError:
            os.write(w, b"setsid=denied\\n")
        try:
            os.setpgid(0, 0)
            os.write(w, b"setpgid=ok\\n")
        except OSError:
            os.write(w, b"setpgid=denied\\n")
        if os.fork() == 0:
            if os.fork() == 0:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                libc.prctl(1, 0, 0, 0, 0)  # drop PDEATHSIG
                os.write(w, f"grandchild={os.getpid()}\\n".encode())
                time.sleep(60)
            os._exit(0)  # the middle process exits: the grandchild is orphaned
        os.write(w, f"child={os.getpid()}\\n".encode())
        time.sleep(60)
        os._exit(0)
    os.close(w)
    seen = b""
    deadline = time.monotonic() + 5
    while seen.count(b"\\n") < 4 and time.monotonic() < deadline:
        seen += os.read(r, 1024)
    for line in seen.decode().split():
        key, _, value = line.partition("=")
        report[key] = value
    meta.logger.info("pids " + report.get("child", "") + " " + report.get("grandchild", ""))
    if meta.config.get("hang"):
        time.sleep(60)
    return report
"""


@requires("watchdog")
def test_fork_double_fork_and_setsid_leave_nothing_behind(sandbox: Sandbox, plugin: Plugin) -> None:
    fork_server = sandbox.fork_server_pid
    report = results(attack(sandbox, plugin, FORK_TREE))
    if sandbox.layers.get("seccomp"):
        # A run is one process (test_a_run_is_one_process_with_one_budget): nothing to outlive it.
        assert report == {"fork": "denied EPERM"}, report
        assert_fork_server_healthy(sandbox, plugin, fork_server)
        return
    if report.get("fork") == "denied EAGAIN":
        # Unprivileged posture: RLIMIT_NPROC counts every task of the supervisor's uid.
        assert sandbox.posture == UNPRIVILEGED, report
        return
    pids = [int(report["child"]), int(report["grandchild"])]
    if sandbox.layers.get("seccomp"):
        assert report["setsid"] == "denied" and report["setpgid"] == "denied"
    assert wait_gone(pids) == [], "a process of the run outlived it"
    assert_fork_server_healthy(sandbox, plugin, fork_server)


@requires("watchdog")
def test_timeout_kills_the_whole_tree(sandbox: Sandbox, plugin: Plugin) -> None:
    started = time.monotonic()
    outcome = attack(
        sandbox,
        plugin,
        FORK_TREE,
        config={"hang": True},
        limits=Limits(timeout_s=1.5, cpu_s=5.0, memory_mb=256),
    )
    assert outcome.outcome == "timeout", outcome
    assert time.monotonic() - started < 5
    # The run logged its descendants' pids before it hung.
    line = next(log.message for log in outcome.logs if log.message.startswith("pids"))
    pids = [int(p) for p in line.split()[1:]]
    # No fork at all happens where seccomp refuses it, or where RLIMIT_NPROC counts every task
    # of the supervisor's uid.
    assert len(pids) == 2 or (
        not pids and (sandbox.layers.get("seccomp") or sandbox.posture == UNPRIVILEGED)
    ), line
    assert wait_gone(pids) == [], "a process of the timed-out run outlived it"


@requires("rlimits")
def test_memory_bomb_ends_in_memory_limit(sandbox: Sandbox, plugin: Plugin) -> None:
    small = Limits(timeout_s=10.0, cpu_s=5.0, memory_mb=128)
    one_block = attack(
        sandbox,
        plugin,
        """
        def run_every_minute(meta):
            return len(bytearray(1 << 30))
    """,
        limits=small,
    )
    assert one_block.outcome == "memory_limit", one_block
    growing = attack(
        sandbox,
        plugin,
        """
        def run_every_minute(meta):
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
    """,
        limits=small,
    )
    assert growing.outcome == "memory_limit", growing
    native = attack(
        sandbox,
        plugin,
        """
        def run_every_minute(meta):
            return {"malloc": libc.malloc(ctypes.c_size_t(1 << 30)) or 0}
    """,
        limits=small,
    )
    assert results(native) == {"malloc": 0}  # malloc fails: the address space is capped


@requires("rlimits")
def test_cpu_loop_ends_in_cpu_limit(sandbox: Sandbox, plugin: Plugin) -> None:
    one_second = Limits(timeout_s=15.0, cpu_s=1.0, memory_mb=256)
    loop = attack(
        sandbox,
        plugin,
        """
        def run_every_minute(meta):
            while True:
                pass
    """,
        limits=one_second,
    )
    assert loop.outcome == "cpu_limit", loop
    # CPU seconds, not wall seconds: on a loaded host the loop gets less than a core.
    assert 500 <= loop.cpu_ms < 2500, loop.cpu_ms
    # Ignoring SIGXCPU does not help: the hard limit one second later is a SIGKILL.
    stubborn = attack(
        sandbox,
        plugin,
        """
        import signal
        def run_every_minute(meta):
            signal.signal(signal.SIGXCPU, signal.SIG_IGN)
            raised = attempt(lambda: __import__("resource").setrlimit(0, (100, 100)))
            while True:
                pass
    """,
        limits=one_second,
    )
    assert stubborn.outcome == "cpu_limit", stubborn
    assert stubborn.cpu_ms < 3500, stubborn.cpu_ms  # the hard limit: cpu_s + 1


@requires("rlimits")  # RLIMIT_NPROC binds the run uid, the namespace's uid, or the supervisor's
def test_fork_bomb_is_bounded(sandbox: Sandbox, plugin: Plugin) -> None:
    report = results(
        attack(
            sandbox,
            plugin,
            """
        def run_every_minute(meta):
            pids, error = [], None
            for _ in range(500):
                try:
                    pid = os.fork()
                except OSError as exc:
                    error = errno.errorcode.get(exc.errno)
                    break
                if pid == 0:
                    time.sleep(30)
                    os._exit(0)
                pids.append(pid)
            return {"forked": len(pids), "error": error, "pids": pids}
    """,
        )
    )
    if sandbox.layers.get("seccomp"):
        assert report["error"] == "EPERM" and report["forked"] == 0, report
    else:
        assert report["error"] == "EAGAIN"
        assert report["forked"] < NPROC_PER_RUN
    assert wait_gone(report["pids"]) == []


@requires("seccomp", "rlimits")
def test_a_run_is_one_process_with_one_budget(sandbox: Sandbox, plugin: Plugin) -> None:
    """RLIMIT_AS and RLIMIT_CPU are per process: a forked child gets a budget of its own (red
    team: 14 children of a 128 MB run held 1.3 GB at once; a chain of children, each exiting
    before its CPU limit, used 9 CPU seconds of a 1-second run, reported as 7 ms and `ok`).
    seccomp refuses every way to make a process (fork, vfork, clone without CLONE_THREAD, and
    clone3); threads, which share the budget, still work."""
    memory = attack(
        sandbox,
        plugin,
        """
        def grab():
            hoard, mib = [], 0
            try:
                while True:
                    block = bytearray(4 << 20)
                    for i in range(0, len(block), 4096):
                        block[i] = 1
                    hoard.append(block)
                    mib += 4
            except MemoryError:
                return hoard, mib

        def run_every_minute(meta):
            r, w = os.pipe()
            children, error = 0, None
            for _ in range(14):
                try:
                    pid = os.fork()
                except OSError as exc:
                    error = errno.errorcode.get(exc.errno)
                    break
                if pid == 0:
                    hoard, mib = grab()
                    os.write(w, mib.to_bytes(4, "little"))
                    time.sleep(3)  # holding it while the others grab theirs
                    os._exit(0)
                children += 1
            held = sum(int.from_bytes(os.read(r, 4), "little") for _ in range(children))
            hoard, mib = grab()
            raw = attempt(lambda: sys_call(libc.syscall, 56, 17, 0, 0, 0, 0))  # clone(SIGCHLD)
            if raw.startswith("ok 0"):
                os._exit(0)
            return {"error": error, "mib": held + mib, "raw_clone": raw}
    """,
        limits=Limits(timeout_s=20.0, cpu_s=5.0, memory_mb=128),
    )
    report = results(memory)
    assert report["mib"] <= 128, f"the run held {report['mib']} MiB with memory_mb=128"
    assert report["error"] == "EPERM", report
    if os.uname().machine == "x86_64":
        assert report["raw_clone"] == "denied EPERM", report
    cpu = attack(
        sandbox,
        plugin,
        """
        import threading

        def burn(w, left):
            start = time.process_time()
            while time.process_time() - start < 0.6:
                pass
            used = time.process_time() - start
            try:
                pid = os.fork() if left else -1
            except OSError:
                pid = -1
            if pid == 0:
                burn(w, left - 1)  # a fresh RLIMIT_CPU in each child
            os.write(w, int(used * 1000).to_bytes(4, "little"))
            os._exit(0)

        def run_every_minute(meta):
            spun = []
            thread = threading.Thread(target=lambda: spun.append(sum(range(10**5))))
            thread.start()
            thread.join()
            r, w = os.pipe()
            chains = 0
            for _ in range(2):
                try:
                    pid = os.fork()
                except OSError:
                    break
                if pid == 0:
                    burn(w, 8)
                chains += 1
            os.close(w)
            total = int(time.process_time() * 1000)
            while chains:
                data = os.read(r, 4)
                if not data:
                    break
                total += int.from_bytes(data, "little")
            return {"cpu_ms": total, "thread": spun == [sum(range(10**5))]}
    """,
        limits=Limits(timeout_s=20.0, cpu_s=1.0, memory_mb=256),
    )
    report = results(cpu)
    assert report["thread"] is True
    assert report["cpu_ms"] <= 2000, f"a 1-second run used {report['cpu_ms']} ms of CPU"


SYSCALL_ABI = """
def run_every_minute(meta):
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t] + [ctypes.c_int] * 3 + [ctypes.c_long]
    addr = libc.mmap(None, 4096, 7, 0x22, -1, 0)  # read, write, execute; private, anonymous
    code = {
        "native_getpid": [0xB8, 39, 0, 0, 0, 0x0F, 0x05],  # mov eax, 39; syscall
        "i386_fork": [0xB8, 2, 0, 0, 0, 0xCD, 0x80],  # mov eax, 2; int 0x80
        "x32_fork": [0xB8, 57, 0, 0, 0x40, 0x0F, 0x05],  # mov eax, 0x40000039; syscall
    }[meta.config["abi"]]
    ctypes.memmove(addr, bytes(code + [0xC3]), len(code) + 1)  # ... ret
    ret = ctypes.CFUNCTYPE(ctypes.c_long)(addr)()
    if ret == 0:
        os._exit(0)  # a forked child
    return {"ret": ret, "pid": os.getpid()}
"""


@requires("seccomp")
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86-64 machine code")
def test_other_syscall_abis_do_not_bypass_seccomp(sandbox: Sandbox, plugin: Plugin) -> None:
    """The filter is written for the native ABI; a call through the i386 (`int 0x80`) or x32
    ABI, where every syscall has another number (fork is 2, not 57), would pass it unchecked.
    libseccomp's action for a foreign ABI kills the run instead (SIGSYS)."""
    native = results(attack(sandbox, plugin, SYSCALL_ABI, config={"abi": "native_getpid"}))
    assert native["ret"] == native["pid"]
    for abi in ("i386_fork", "x32_fork"):
        outcome = attack(sandbox, plugin, SYSCALL_ABI, config={"abi": abi})
        assert outcome.outcome == "crashed" and outcome.signal == 31, (abi, outcome)  # SIGSYS


@requires("watchdog")
@pytest.mark.skipif(
    not os.path.exists("/proc/self/autogroup"), reason="this kernel has no scheduler autogroups"
)
def test_a_run_stays_below_the_supervisor_in_the_scheduler(
    sandbox: Sandbox, plugin: Plugin
) -> None:
    """A run's niceness (+5) ranks it below the supervisor only within one scheduler autogroup.
    The kernel gives each new session an autogroup of its own, weighted like the supervisor's
    whole session (where the supervisor runs in the root cgroup, as from a shell): a run that
    called setsid() competed as an equal of the supervisor's whole session (red team: the share
    of a CPU-bound supervisor thread fell by almost half beside 4 CPU-bound runs). A run is now
    its own process group in the fork server's session."""
    import psutil

    future = sandbox.submit(
        RunRequest(
            plugin=plugin,
            task="run_every_minute",
            limits=LIMITS,
            unrestricted_source="import time\ndef run_every_minute(meta):\n    time.sleep(3)\n",
        )
    )
    server = psutil.Process(sandbox.fork_server_pid)
    deadline = time.monotonic() + 5
    children: list[psutil.Process] = []
    while not children and time.monotonic() < deadline:
        children = server.children()
        time.sleep(0.05)
    assert children, "no run started"
    run = children[0]
    assert (
        Path(f"/proc/{run.pid}/autogroup").read_text()
        == Path(f"/proc/{server.pid}/autogroup").read_text()
    )
    assert os.getpgid(run.pid) == run.pid  # the watchdog's group: the run's own
    assert run.nice() >= 5
    assert future.result().outcome == "ok"


@requires("seccomp")
def test_no_out_of_band_data_on_the_channel(sandbox: Sandbox, plugin: Plugin) -> None:
    """MSG_OOB on a Unix stream socket is a kernel feature nothing here uses, with a history of
    memory-safety bugs (CVE-2025-38236); a run could send it to the supervisor (red team). Every
    send and receive call refuses the flag; the channel works as before."""
    report = results(
        attack(
            sandbox,
            plugin,
            """
        def run_every_minute(meta):
            import gc
            channel = next(o for o in gc.get_objects() if isinstance(o, socket.socket))
            oob, peek = socket.MSG_OOB, socket.MSG_OOB | socket.MSG_PEEK | socket.MSG_DONTWAIT
            return {
                "send": attempt(lambda: channel.send(b"!", oob)),
                "sendmsg": attempt(lambda: channel.sendmsg([b"!"], [], oob)),
                "recv": attempt(lambda: channel.recv(1, peek)),
                "recvmsg": attempt(lambda: channel.recvmsg(1, 0, peek)),
                "cache": meta.cache.set("k", 1) or meta.cache.get("k"),
            }
    """,
        )
    )
    assert report.pop("cache") == 1
    assert report == dict.fromkeys(("send", "sendmsg", "recv", "recvmsg"), "denied EPERM")


@requires("seccomp")
def test_no_watching_host_paths(sandbox: Sandbox, plugin: Plugin, tmp_path: Path) -> None:
    """Red team: Landlock does not cover inotify. Without the empty root (the unprivileged
    posture) a run watched a host directory and read, from its events, the names of files
    created in it while it ran. seccomp refuses inotify and fanotify in every posture."""
    watched = tmp_path / "watched"
    watched.mkdir()
    report = results(
        attack(
            sandbox,
            plugin,
            """
        def run_every_minute(meta):
            def watch():
                fd = sys_call(libc.inotify_init1, 0o4000)  # IN_NONBLOCK
                return sys_call(libc.inotify_add_watch, fd, meta.config["path"].encode(), 0xFFF)
            return {
                "inotify_init": attempt(lambda: sys_call(libc.inotify_init1, 0)),
                "inotify_watch": attempt(watch),
                "fanotify_init": attempt(lambda: sys_call(libc.fanotify_init, 0, 0)),
            }
    """,
            config={"path": str(watched)},
        )
    )
    assert report == dict.fromkeys(
        ("inotify_init", "inotify_watch", "fanotify_init"), "denied EPERM"
    )


@requires("seccomp")
def test_no_file_metadata_is_changed(sandbox: Sandbox, plugin: Plugin, tmp_path: Path) -> None:
    """Red team: Landlock covers no metadata call. Without the empty root (the unprivileged
    posture) a run holds the supervisor's uid and could chmod, chown, re-date and write extended
    attributes of the supervisor's files (a secret made world-readable, a data directory made
    unreadable, an xattr as a channel between runs). seccomp refuses them in every posture,
    before any path is looked up (so EPERM, also where the path does not exist)."""
    victim = tmp_path / "victim.txt"
    victim.write_text("x")
    victim.chmod(0o600)
    report = results(
        attack(
            sandbox,
            plugin,
            """
        def run_every_minute(meta):
            path, (r, w) = meta.config["path"], os.pipe()
            return {
                "chmod": attempt(lambda: os.chmod(path, 0o666)),
                "fchmod": attempt(lambda: os.fchmod(w, 0o666)),
                "chown": attempt(lambda: os.chown(path, os.getuid(), -1)),
                "fchown": attempt(lambda: os.fchown(w, os.getuid(), -1)),
                "utime": attempt(lambda: os.utime(path, (0, 0))),
                "futime": attempt(lambda: os.utime(w, (0, 0))),
                "setxattr": attempt(lambda: os.setxattr(path, "user.x", b"run data")),
                "fsetxattr": attempt(lambda: os.setxattr(w, "user.x", b"run data")),
                "getxattr": attempt(lambda: os.getxattr(path, "user.x")),
                "listxattr": attempt(lambda: os.listxattr(path)),
                "removexattr": attempt(lambda: os.removexattr(path, "user.x")),
            }
    """,
            config={"path": str(victim)},
        )
    )
    assert set(report.values()) == {"denied EPERM"}, report
    assert victim.stat().st_mode & 0o777 == 0o600 and victim.stat().st_mtime > 0


@requires("seccomp")
@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="numbers checked there")
def test_syscalls_newer_than_the_filter_are_refused(sandbox: Sandbox, plugin: Plugin) -> None:
    """Red team: libseccomp names syscalls up to futex_requeue (456); later ones cannot be
    refused by name, so the deny-list let them reach the kernel (setxattrat, a metadata write
    Landlock does not cover; statmount and listmount, which list mounts). Every number from 457
    on fails with ENOSYS, as on an older kernel; older ones work as before."""
    report = results(
        attack(
            sandbox,
            plugin,
            """
        def run_every_minute(meta):
            nr = {"statmount": 457, "listmount": 458, "mseal": 462, "setxattrat": 463,
                  "getxattrat": 464, "file_setattr": 469, "futex_wake": 454}
            return {name: attempt(lambda n=n: sys_call(libc.syscall, n, -1, 0, 0, 0, 0))
                    for name, n in nr.items()}
    """,
        )
    )
    assert report.pop("futex_wake") != "denied ENOSYS", report  # reviewed: the kernel answers
    assert set(report.values()) == {"denied ENOSYS"}, report


@requires("seccomp")
def test_no_process_scheduling_is_changed(sandbox: Sandbox, plugin: Plugin) -> None:
    """Red team: where runs keep the supervisor's uid (userns, unprivileged), the kernel lets a
    run lower the priority of every process of that uid (`setpriority(PRIO_USER)`), put the
    supervisor in SCHED_IDLE or pin it to one CPU: Landlock does not cover scheduling, and
    lowering a priority needs no capability. seccomp refuses these calls for any process (the
    run's own niceness is set before the filter)."""
    report = results(
        attack(
            sandbox,
            plugin,
            """
        def run_every_minute(meta):
            server = os.getppid()
            return {
                "nice_user": attempt(lambda: os.setpriority(os.PRIO_USER, 0, 19)),
                "nice_group": attempt(lambda: os.setpriority(os.PRIO_PGRP, 0, 19)),
                "nice_self": attempt(lambda: os.setpriority(os.PRIO_PROCESS, 0, 19)),
                "idle": attempt(lambda: os.sched_setscheduler(server, os.SCHED_IDLE, os.sched_param(0))),
                "idle_self": attempt(lambda: os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))),
                "affinity": attempt(lambda: os.sched_setaffinity(server, {0})),
                "ioprio": attempt(lambda: sys_call(libc.syscall, 251 if meta.config["x86"] else 30, 3, 0, 7 | 3 << 13)),
                "own_nice": os.getpriority(os.PRIO_PROCESS, 0),
            }
    """,
            config={"x86": os.uname().machine == "x86_64"},
        )
    )
    assert report.pop("own_nice") >= 5  # RUN_NICENESS (over the fork server's), set by the jail
    assert set(report.values()) == {"denied EPERM"}, report


@requires("seccomp")
def test_no_host_wide_sync_or_kernel_log(sandbox: Sandbox, plugin: Plugin) -> None:
    """Red team: `sync()` needs no privilege and flushes every file system of the host (in a
    loop: an I/O storm under the database's fsyncs); `syslog()` reads the kernel log wherever
    `kernel.dmesg_restrict` is 0. seccomp refuses both."""
    report = results(
        attack(
            sandbox,
            plugin,
            """
        def run_every_minute(meta):
            return {
                "sync": attempt(lambda: sys_call(libc.syscall, 162 if meta.config["x86"] else 81)),
                "syslog_read_all": attempt(lambda: sys_call(libc.klogctl, 3, ctypes.create_string_buffer(4096), 4096)),
                "syslog_size": attempt(lambda: sys_call(libc.klogctl, 10, None, 0)),
            }
    """,
            config={"x86": os.uname().machine == "x86_64"},
        )
    )
    assert set(report.values()) == {"denied EPERM"}, report


@requires("seccomp")
def test_no_host_wide_aio_budget_is_taken(sandbox: Sandbox, plugin: Plugin) -> None:
    """Red team: Linux AIO contexts reserve events from one budget for the whole host
    (`fs.aio-max-nr`): one run reserved all 65,536 and `io_setup` failed with EAGAIN for every
    other process of the host while it ran. seccomp refuses the AIO calls."""
    report = results(
        attack(
            sandbox,
            plugin,
            """
        def run_every_minute(meta):
            nr = 206 if meta.config["x86"] else 0  # io_setup
            context = ctypes.c_ulong(0)
            return {"io_setup": attempt(lambda: sys_call(libc.syscall, nr, 1, ctypes.byref(context)))}
    """,
            config={"x86": os.uname().machine == "x86_64"},
        )
    )
    assert report == {"io_setup": "denied EPERM"}, report


@requires("rlimits")
def test_file_descriptors_are_capped(sandbox: Sandbox, plugin: Plugin) -> None:
    report = results(
        attack(
            sandbox,
            plugin,
            """
        def run_every_minute(meta):
            held = []
            try:
                while len(held) < 10_000:
                    held.extend(os.pipe())
            except OSError as exc:
                return {"opened": len(held), "error": errno.errorcode.get(exc.errno)}
            return {"opened": len(held), "error": None}
    """,
        )
    )
    assert report["error"] == "EMFILE"
    assert report["opened"] <= NOFILE_PER_RUN


def test_state_does_not_survive_a_run(sandbox: Sandbox, plugin: Plugin) -> None:
    """A monkey-patch, a module global, an environment variable: gone in the next child."""
    report = results(
        attack(
            sandbox,
            plugin,
            """
        import builtins, math
        def run_every_minute(meta):
            math.sqrt = lambda x: "patched"
            builtins.LEFT_BEHIND = "a builtin"
            sys.modules["sandbox.meta"].MAX_LOG_LINES = 10 ** 9
            os.environ["LEFT_BEHIND"] = "1"
            return {"sqrt": math.sqrt(4)}
    """,
        )
    )
    assert report == {"sqrt": "patched"}
    after = results(
        attack(
            sandbox,
            plugin,
            """
        import builtins, math
        def run_every_minute(meta):
            return {"sqrt": math.sqrt(4), "cap": sys.modules["sandbox.meta"].MAX_LOG_LINES,
                    "env": dict(os.environ), "builtin": hasattr(builtins, "LEFT_BEHIND")}
    """,
        )
    )
    assert after == {"sqrt": 2.0, "cap": 1000, "env": {}, "builtin": False}


def test_a_forged_frame_is_an_output_limit(sandbox: Sandbox, plugin: Plugin) -> None:
    """The child speaks JSON frames to the fork server: a forged huge frame header ends the run
    as output_limit and nothing else (the fork server never unpickles, never trusts a size)."""
    fork_server = sandbox.fork_server_pid
    outcome = attack(
        sandbox,
        plugin,
        """
        import stat, struct
        def run_every_minute(meta):
            channel = [fd for fd in range(64) if attempt(lambda: os.fstat(fd)).startswith("ok")][0]
            os.write(channel, struct.pack(">I", 2 ** 31) + b"{" * 1024)
            time.sleep(5)
    """,
    )
    assert outcome.outcome == "output_limit", outcome
    assert_fork_server_healthy(sandbox, plugin, fork_server)


# -- layer 4: kernel filters --------------------------------------------------------------------


@requires("landlock")
def test_no_file_is_written(sandbox: Sandbox, plugin: Plugin, tmp_path: Path) -> None:
    host_target = tmp_path / "written-by-plugin"
    tmp_name = f"/tmp/plugin-runtime-attack-{uuid.uuid4().hex}"
    report = results(
        attack(
            sandbox,
            plugin,
            """
        def run_every_minute(meta):
            host, tmp = meta.config["host"], meta.config["tmp"]
            def write(path):
                with open(path, "w") as fh:
                    fh.write("x")
            return {
                "tmp": attempt(lambda: write(tmp)),
                "host_path": attempt(lambda: write(host)),
                "cwd": attempt(lambda: write("x")),
                "root": attempt(lambda: write("/x")),
                "mkdir": attempt(lambda: os.mkdir("d")),
                "mkfifo": attempt(lambda: os.mkfifo("f")),
                "symlink": attempt(lambda: os.symlink("/", "l")),
                "unix_socket_file": attempt(lambda: socket.socket(socket.AF_UNIX).bind("s")),
                "chmod_root": attempt(lambda: os.chmod("/", 0o777)),
                "dotdot": attempt(lambda: write("../../../tmp/dotdot")),
            }
    """,
            config={"host": str(host_target), "tmp": tmp_name},
        )
    )
    assert_all_denied(report)
    assert not host_target.exists() and not os.path.exists(tmp_name)
    assert not os.path.exists("/tmp/dotdot")
    for root in glob.glob("/tmp/plugin-runtime-root-*"):
        assert os.listdir(root) == [], f"the empty root {root} got files"


@requires("landlock")
def test_no_host_file_is_read(sandbox: Sandbox, plugin: Plugin, tmp_path: Path) -> None:
    readable = tmp_path / "readable.txt"
    readable.write_text("host data")
    readable.chmod(0o644)
    report = results(
        attack(
            sandbox,
            plugin,
            """
        def run_every_minute(meta):
            return {
                "passwd": attempt(lambda: open("/etc/passwd").read()),
                "host_file": attempt(lambda: open(meta.config["path"]).read()),
                "list_root": attempt(lambda: os.listdir("/")),
                "open_root_dir": attempt(lambda: os.open("/", os.O_RDONLY | os.O_DIRECTORY)),
                "proc": attempt(lambda: os.listdir("/proc")),
                "dev_mem": attempt(lambda: open("/dev/mem", "rb").read(1)),
                "python_stdlib": attempt(lambda: open(os.__file__).read(10)),
                "import_from_disk": attempt(lambda: __import__("xml.dom.minidom")),
            }
    """,
            config={"path": str(readable)},
        )
    )
    assert_all_denied(report)


@requires("seccomp")
def test_no_network(sandbox: Sandbox, plugin: Plugin) -> None:
    abstract = f"\0plugin-runtime-test-{uuid.uuid4().hex}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(abstract)
    listener.listen(1)
    try:
        report = results(
            attack(
                sandbox,
                plugin,
                """
            def run_every_minute(meta):
                def connect(family, address, kind=socket.SOCK_STREAM):
                    s = socket.socket(family, kind)
                    s.settimeout(2)
                    s.connect(address)
                return {
                    "inet": attempt(lambda: socket.socket(socket.AF_INET)),
                    "inet6": attempt(lambda: socket.socket(socket.AF_INET6)),
                    "udp": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)),
                    "raw": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)),
                    "netlink": attempt(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)),
                    "packet": attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW)),
                    "postgres_tcp": attempt(lambda: connect(socket.AF_INET, ("127.0.0.1", 5432))),
                    "postgres_unix": attempt(lambda: connect(socket.AF_UNIX, "/var/run/postgresql/.s.PGSQL.5432")),
                    "postgres_unix_tmp": attempt(lambda: connect(socket.AF_UNIX, "/tmp/.s.PGSQL.5432")),
                    "host_abstract_socket": attempt(lambda: connect(socket.AF_UNIX, meta.config["abstract"])),
                    "raw_syscall_inet": attempt(lambda: sys_call(libc.socket, 2, 1, 0)),
                }
        """,
                config={"abstract": abstract},
            )
        )
    finally:
        listener.close()
    assert_all_denied(report)


@requires("seccomp")
@pytest.mark.skipif(
    os.uname().machine not in SYSCALL_NUMBERS, reason="syscall numbers not tabulated"
)
def test_kernel_escapes_are_refused(sandbox: Sandbox, plugin: Plugin) -> None:
    machine = os.uname().machine
    numbers = SYSCALL_NUMBERS[machine]
    report = results(
        attack(
            sandbox,
            plugin,
            """
        def run_every_minute(meta):
            n = meta.config["numbers"]
            ppid = os.getppid()
            libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
            # struct file_handle {u32 handle_bytes; int handle_type; u8 f_handle[8]} ("shocker")
            handle = ctypes.create_string_buffer(b"\\x08\\0\\0\\0\\x01\\0\\0\\0" + bytes(8))
            def clone_newuser():
                pid = libc.syscall(n["clone"], 0x10000000 | 17, 0, 0, 0, 0)
                if pid == 0:
                    os._exit(0)
                if pid == -1:
                    raise OSError(ctypes.get_errno(), "clone")
                return pid
            return {
                "ptrace_attach_parent": attempt(lambda: sys_call(libc.ptrace, 16, ppid, 0, 0)),
                "ptrace_traceme": attempt(lambda: sys_call(libc.ptrace, 0, 0, 0, 0)),
                "process_vm_readv": attempt(lambda: sys_call(libc.process_vm_readv, ppid, 0, 0, 0, 0, 0)),
                "unshare_user": attempt(lambda: sys_call(libc.unshare, 0x10000000)),
                "unshare_mount": attempt(lambda: sys_call(libc.unshare, 0x00020000)),
                "unshare_net": attempt(lambda: sys_call(libc.unshare, 0x40000000)),
                "clone_newuser": attempt(clone_newuser),
                "setns": attempt(lambda: sys_call(libc.setns, 0, 0)),
                "mount_tmpfs": attempt(lambda: sys_call(libc.mount, b"none", b"/", b"tmpfs", 0, None)),
                "chroot_escape": attempt(lambda: sys_call(libc.chroot, b".")),
                "bpf": attempt(lambda: sys_call(libc.syscall, n["bpf"], 0, 0, 0)),
                "io_uring_setup": attempt(lambda: sys_call(libc.syscall, 425, 8, ctypes.create_string_buffer(120))),
                "open_by_handle_at": attempt(lambda: sys_call(libc.syscall, n["open_by_handle_at"], -100, handle, 0)),
                "raise_cpu_limit": attempt(lambda: __import__("resource").setrlimit(0, (10 ** 6, 10 ** 6))),
                "raise_parent_limit": attempt(lambda: __import__("resource").prlimit(ppid, 7, (1, 1))),
                "keyctl": attempt(lambda: sys_call(libc.syscall, 250 if meta.config["x86"] else 219, 0, 0)),
                "personality": attempt(lambda: sys_call(libc.personality, 0x0040000)),
            }
    """,
            config={"numbers": numbers, "x86": machine == "x86_64"},
        )
    )
    assert_all_denied(report)


def test_fetch_cannot_reach_internal_services(sandbox: Sandbox, tmp_path: Path) -> None:
    """The only door out is meta.fetch, performed by the supervisor: a host must be in the
    plugin's allowed_hosts and must not resolve to a loopback/private address."""
    directory = tmp_path / "fetcher"
    directory.mkdir()
    (directory / "plugin.json").write_text(
        json.dumps(
            {
                "name": "fetcher",
                "version": "1.0.0",
                "main": "main.py",
                "allowed_hosts": ["localhost", "127.0.0.1", "169.254.169.254"],
            }
        )
    )
    (directory / "main.py").write_text(
        textwrap.dedent("""
        def run_every_minute(meta):
            out = {}
            for url in ["http://localhost:5432/", "http://127.0.0.1:5432/",
                        "http://169.254.169.254/latest/meta-data/", "http://example.org/",
                        "file:///etc/passwd"]:
                try:
                    out[url] = "ok " + str(meta.fetch(url, timeout_s=2).status)
                except Exception as exc:
                    out[url] = "denied " + str(exc)
            return out
    """)
    )
    outcome = sandbox.run(
        RunRequest(plugin=load_plugin(directory), task="run_every_minute", limits=LIMITS)
    )
    report = results(outcome)
    assert_all_denied(report)
    assert "allowed_hosts" in report["http://example.org/"]
    assert "private or local" in report["http://127.0.0.1:5432/"]


# -- no socket but the inherited channel; no IPC; no memory beyond the limit ----------------------


@requires("seccomp")
def test_no_socket_but_the_inherited_one(sandbox: Sandbox, plugin: Plugin) -> None:
    """socket, socketpair, connect, bind, listen, accept and accept4 are refused for every family,
    Unix included; on the channel itself too. The channel still works (the run reports)."""
    abstract = f"\0plugin-runtime-test-{uuid.uuid4().hex}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(abstract)
    listener.listen(1)
    try:
        report = results(
            attack(
                sandbox,
                plugin,
                """
            import stat
            def run_every_minute(meta):
                channel = [fd for fd in range(64) if attempt(lambda: os.fstat(fd)).startswith("ok")][0]
                ch = socket.socket(fileno=os.dup(channel))
                sockaddr = ctypes.create_string_buffer(b"\\x01\\x00" + meta.config["abstract"].encode() + b"\\0")
                return {
                    "unix_stream": attempt(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)),
                    "unix_dgram": attempt(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)),
                    "socketpair": attempt(lambda: socket.socketpair()),
                    "raw_socketpair": attempt(lambda: sys_call(libc.socketpair, 1, 1, 0, ctypes.create_string_buffer(8))),
                    "raw_socket_unix": attempt(lambda: sys_call(libc.socket, 1, 1, 0)),
                    "connect_channel_to_host": attempt(lambda: sys_call(libc.connect, channel, sockaddr, 3 + len(meta.config["abstract"]))),
                    "bind_channel": attempt(lambda: ch.bind("\\0plugin-runtime-bind")),
                    "listen_channel": attempt(lambda: ch.listen(1)),
                    "accept_channel": attempt(lambda: sys_call(libc.accept, channel, None, None)),
                    "accept4_channel": attempt(lambda: sys_call(libc.accept4, channel, None, None, 0)),
                }
        """,
                config={"abstract": abstract},
            )
        )
    finally:
        listener.close()
    assert_all_denied(report)
    assert all("EPERM" in str(v) for v in report.values()), report


# An existing SysV segment of the host (made by the test) is what a run might try to attach.
IPC_AND_MEMORY = """
IPC_CREAT, IPC_PRIVATE = 0o1000, 0
def run_every_minute(meta):
    mb = 1 << 20
    def memfd_grow():
        fd = os.memfd_create("hoard")
        os.ftruncate(fd, 512 * mb)
    def memfd_write():
        fd = os.memfd_create("hoard")
        os.write(fd, b"x" * mb)
    def shared_anonymous():  # MAP_SHARED | MAP_ANONYMOUS, read and write
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t] + [ctypes.c_int] * 3 + [ctypes.c_long]
        addr = libc.mmap(None, 512 * mb, 3, 0x21, -1, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap")
        ctypes.memset(addr, 1, 512 * mb)
    def pipe_grow():  # F_SETPIPE_SZ: a pipe's buffer is kernel memory outside RLIMIT_AS
        r, w = os.pipe()
        return sys_call(libc.fcntl, w, 1031, mb)
    def timers():  # POSIX timers: kernel memory outside RLIMIT_AS, counted per uid
        timer = ctypes.c_void_p()
        for made in range(100_000):
            if libc.timer_create(1, None, ctypes.byref(timer)) != 0:
                return made
        return made + 1
    return {
        "timers": timers(),
        "pipe_grow": attempt(pipe_grow),
        "shmget": attempt(lambda: sys_call(libc.shmget, IPC_PRIVATE, 64 * mb, IPC_CREAT | 0o600)),
        "shmget_host_segment": attempt(lambda: sys_call(libc.shmget, meta.config["shm_key"], 0, 0)),
        "shmat_host_segment": attempt(lambda: sys_call(libc.shmat, meta.config["shm_id"], None, 0)),
        "msgget": attempt(lambda: sys_call(libc.msgget, IPC_PRIVATE, IPC_CREAT | 0o600)),
        "semget": attempt(lambda: sys_call(libc.semget, IPC_PRIVATE, 1, IPC_CREAT | 0o600)),
        "mq_open": attempt(lambda: sys_call(libc.mq_open, b"/hoard", 0o100 | 2, 0o600, None)),
        "dev_shm": attempt(lambda: open("/dev/shm/hoard", "wb").write(b"x" * mb)),
        "memfd_grow": attempt(memfd_grow),
        "memfd_write": attempt(memfd_write),
        "shared_anonymous_beyond_memory_mb": attempt(shared_anonymous),
    }
"""


@requires("seccomp", "rlimits")
def test_no_ipc_object_and_no_memory_beyond_the_limit(sandbox: Sandbox, plugin: Plugin) -> None:
    """SysV shared memory, queues and semaphores and POSIX queues are refused, so none can
    outlive a run or pass between runs; memfd and tmpfs files cannot grow (RLIMIT_FSIZE=0); shared
    anonymous memory counts in RLIMIT_AS; pipes keep their default 64 KiB (no F_SETPIPE_SZ). A SysV segment of the host is not reachable either."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    key = 0x5052_0000 + os.getpid() % 0xFFFF
    shm_id = libc.shmget(key, 4096, 0o1000 | 0o666)
    assert shm_id >= 0, ctypes.get_errno()
    try:
        report = results(
            attack(
                sandbox,
                plugin,
                IPC_AND_MEMORY,
                config={"shm_key": key, "shm_id": shm_id},
                limits=Limits(timeout_s=10.0, cpu_s=5.0, memory_mb=256),
            )
        )
    finally:
        libc.shmctl(shm_id, 0, None)  # IPC_RMID
    # Red team: 96,365 POSIX timers in one run (the host's RLIMIT_SIGPENDING, counted per uid).
    assert report.pop("timers") <= SIGPENDING_PER_RUN, report
    assert_all_denied(report)
    for name in ("shmget", "msgget", "semget", "mq_open", "shmget_host_segment"):
        assert report[name] == "denied EPERM", report
    assert report["memfd_grow"] == report["memfd_write"] == "denied EFBIG", report
    # Red team: 15 pipes grown to 1 MiB each held 15 MiB beyond memory_mb; now 64 KiB each.
    assert report["pipe_grow"] == "denied EPERM", report
    # (This probe once declared 7 arguments for mmap's 6, so a TypeError "denied" it.)
    assert report["shared_anonymous_beyond_memory_mb"] == "denied ENOMEM", report


@requires("landlock_scope")
def test_landlock_scopes_abstract_sockets_and_signals(tmp_path: Path) -> None:
    """Landlock alone (no seccomp, no namespaces), as the jail builds it: an abstract Unix socket
    and a signal to a process outside the domain are refused (ABI 6), while before restricting
    the same process reaches both (the control)."""
    abstract = f"\0plugin-runtime-scope-{uuid.uuid4().hex}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(abstract)
    listener.listen(4)
    probe = textwrap.dedent(f"""
        import errno, json, os, socket, sys
        from sandbox.jail import PR_SET_NO_NEW_PRIVS, landlock_abi, landlock_restrict, landlock_ruleset, prctl
        def attempt(fn):
            try:
                fn()
                return "ok"
            except OSError as exc:
                return "denied " + errno.errorcode.get(exc.errno, "?")
        def reach():
            return {{
                "abstract": attempt(lambda: socket.socket(socket.AF_UNIX).connect({abstract!r})),
                "signal_parent": attempt(lambda: os.kill(os.getppid(), 0)),
            }}
        before = reach()
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        landlock_restrict(landlock_ruleset(landlock_abi()))
        print(json.dumps({{"before": before, "after": reach()}}))
    """)
    import subprocess
    import sys

    try:
        out = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
            cwd=Path(__file__).resolve().parents[2],
        )
    finally:
        listener.close()
    report = json.loads(out.stdout)
    assert report["before"] == {"abstract": "ok", "signal_parent": "ok"}, report
    assert report["after"] == {"abstract": "denied EPERM", "signal_parent": "denied EPERM"}, report


@requires("chroot")
def test_host_paths_do_not_exist(sandbox: Sandbox, plugin: Plugin, tmp_path: Path) -> None:
    """In the empty root, no host path exists: not even stat() (which Landlock does not cover)
    finds the host's files, the test's files, or PostgreSQL's socket."""
    mine = tmp_path / "visible-to-stat"
    mine.write_text("x")
    report = results(
        attack(
            sandbox,
            plugin,
            """
        def run_every_minute(meta):
            return {p: attempt(lambda p=p: os.stat(p)) for p in meta.config["paths"]}
    """,
            config={
                "paths": [
                    "/etc/passwd",
                    str(mine),
                    "/tmp",
                    "/proc/1",
                    "/var/run/postgresql/.s.PGSQL.5432",
                    "/dev/null",
                ]
            },
        )
    )
    assert_all_denied(report)
    assert set(report.values()) == {"denied ENOENT"}, report


def test_runs_hold_no_capability(sandbox: Sandbox, plugin: Plugin) -> None:
    """Every posture: the run's capability sets are empty (root: dropped with the uid; user
    namespace: dropped by capset; unprivileged: never held), and uid 0 is out of reach."""
    report = results(
        attack(
            sandbox,
            plugin,
            """
        def run_every_minute(meta):
            header = (ctypes.c_uint32 * 2)(0x20080522, 0)
            data = (ctypes.c_uint32 * 6)()
            sys_call(libc.capget, header, data)
            return {
                "caps": list(data),
                "ambient_net_admin": libc.prctl(47, 1, 12, 0, 0),  # PR_CAP_AMBIENT_IS_SET
                "setuid_root": attempt(lambda: os.setuid(0)),
                "setresuid_root": attempt(lambda: os.setresuid(0, 0, 0)),
                "setgid_root": attempt(lambda: os.setgid(0)),
                "uid": os.getuid(),
            }
    """,
        )
    )
    assert report.pop("caps") == [0] * 6
    assert report.pop("ambient_net_admin") == 0
    assert report.pop("uid") != 0
    assert_all_denied(report)


def test_the_unprivileged_posture_is_reproduced(plugin: Plugin) -> None:
    """A fork server that is refused namespaces (as a container's default seccomp profile does)
    really meets the refusal: not root, it lands in the `unprivileged` posture with the layers
    SECURITY.md lists for it, and says why; as root it loses its namespaces and keeps the rest
    (the empty root is then a host directory: chroot needs no namespace).
    What the posture keeps still holds: no socket, no host file, no IPC object."""
    with Sandbox(allow_unrestricted=True, refuse_namespaces=True) as sb:
        missing = {name for name, on in sb.layers.items() if not on}
        if os.geteuid() == 0:
            assert sb.posture == ROOT
            assert missing == {"netns", "ipcns"}
        else:
            assert sb.posture == UNPRIVILEGED
            assert "refuses user namespaces" in sb.posture_reason
            assert "EPERM" in sb.posture_reason or "not permitted" in sb.posture_reason
            assert missing == POSTURE_LACKS[UNPRIVILEGED] | (
                {"landlock_scope"} if not HOST_LAYERS["landlock_scope"] else set()
            )
        report = results(
            attack(
                sb,
                plugin,
                """
            def run_every_minute(meta):
                return {
                    "unix_socket": attempt(lambda: socket.socket(socket.AF_UNIX)),
                    "inet_socket": attempt(lambda: socket.socket(socket.AF_INET)),
                    "read_passwd": attempt(lambda: open("/etc/passwd").read()),
                    "shmget": attempt(lambda: sys_call(libc.shmget, 0, 1 << 20, 0o1000 | 0o600)),
                    "unshare_user": attempt(lambda: sys_call(libc.unshare, 0x10000000)),
                }
        """,
            )
        )
    assert_all_denied(report)


# -- the embedded database: the attack of a non-root `serve` -------------------------------------

# Speaks PostgreSQL's wire protocol over its Unix socket (trust authentication, as the embedded
# server has) and reads every config's settings: what a plugin that escaped layer 1 would do.
READ_CONFIGS_OVER_UNIX_SOCKET = """
import struct
def pg_read_settings(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    params = b"user\\0postgres\\0database\\0" + meta_db.encode() + b"\\0\\0"
    s.sendall(struct.pack(">II", 8 + len(params), 196608) + params)
    query = b"SELECT settings::text FROM plugin_runtime.plugin_configs\\0"
    sent, data = False, b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        if not sent and b"Z\\0\\0\\0\\x05" in data:
            s.sendall(b"Q" + struct.pack(">I", 4 + len(query)) + query)
            sent, data = True, b""
        elif sent and b"Z\\0\\0\\0\\x05" in data:
            break
    text = data.decode("utf-8", "replace")
    return text[text.find("{"):]

def run_every_minute(meta):
    global meta_db
    meta_db = meta.config["database"]
    return {"read_settings": attempt(lambda: pg_read_settings(meta.config["socket"]))}
"""


@requires("seccomp")
def test_the_embedded_database_is_unreachable(sandbox: Sandbox, plugin: Plugin) -> None:
    """`serve` with the embedded PostgreSQL (its Unix socket in the data directory, trust
    authentication): an escaped run must not connect to it and read another config's secret
    settings. The same payload run as a plain process of the same user does read them (the
    control), so the test fails if the jail does not hold."""
    # pgserver has no build for Python 3.13: there is no embedded database to attack there.
    pytest.importorskip("pgserver", reason="no embedded PostgreSQL for this Python")
    import subprocess
    import sys
    from urllib.parse import parse_qs, urlsplit

    import psycopg

    from runtime.migrate import migrate
    from runtime.store import create_config, install_plugin

    # Started as serve starts it (runtime/db.py), but stopped afterwards. Not under pytest's
    # tmp_path: as root, pgserver runs PostgreSQL as another user, who must reach the data.
    data_dir = Path(tempfile.mkdtemp(prefix="plugin-runtime-pgdata-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(data_dir, cleanup_mode="stop")
    url = server.get_uri()
    try:
        secret = f"secret-of-another-config-{uuid.uuid4().hex}"
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            install_plugin(
                conn, load_plugin(Path(__file__).resolve().parents[1] / "plugins" / "tiny")
            )
            create_config(conn, "tiny", {"api_key": secret})
        parts = urlsplit(url)
        socket_path = f"{parse_qs(parts.query)['host'][0]}/.s.PGSQL.{parts.port or 5432}"
        config = {"socket": socket_path, "database": parts.path.lstrip("/") or "postgres"}
        control_source = (
            PRELUDE
            + READ_CONFIGS_OVER_UNIX_SOCKET
            + "\nclass M:\n    config = "
            + repr(config)
            + "\nprint(json.dumps(run_every_minute(M)))\n"
        )
        control = subprocess.run(
            [sys.executable, "-c", "import json\n" + control_source],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert secret in control.stdout, control.stdout + control.stderr
        report = results(attack(sandbox, plugin, READ_CONFIGS_OVER_UNIX_SOCKET, config=config))
        assert_all_denied(report)
        assert secret not in json.dumps(report)
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


# What SECURITY.md's posture table says an escaped plugin can still reach, measured: metadata of
# host paths (stat, readlink, access, xattrs: Landlock does not cover them) where there is no empty
# root; never their contents, a directory listing, a signal or a socket.
STILL_REACHES = """
def run_every_minute(meta):
    path = meta.config["path"]
    return {
        "stat": attempt(lambda: os.stat(path).st_size),
        "readlink": attempt(lambda: os.readlink(meta.config["link"])),
        "access": attempt(lambda: os.access(path, os.R_OK)),
        "listxattr": attempt(lambda: os.listxattr(path)),
        "read": attempt(lambda: open(path).read()),
        "listdir": attempt(lambda: os.listdir(os.path.dirname(path))),
        "signal_supervisor": attempt(lambda: os.kill(meta.config["test_pid"], 0)),
        "unix_socket": attempt(lambda: socket.socket(socket.AF_UNIX)),
    }
"""


@requires("seccomp", "landlock")
def test_what_an_escaped_plugin_still_reaches(
    sandbox: Sandbox, plugin: Plugin, tmp_path: Path
) -> None:
    secret = tmp_path / "host-file.txt"
    secret.write_text("host data")
    secret.chmod(0o644)
    link = tmp_path / "link"
    link.symlink_to(secret)
    report = results(
        attack(
            sandbox,
            plugin,
            STILL_REACHES,
            config={"path": str(secret), "link": str(link), "test_pid": os.getpid()},
        )
    )
    access = report.pop("access")
    metadata = {k: report.pop(k) for k in ("stat", "readlink")}
    assert_all_denied(report)  # contents, listings, xattrs, signals, sockets: never
    assert report["listxattr"] == "denied EPERM"  # seccomp, in every posture (red team)
    if sandbox.layers["chroot"]:
        assert set(metadata.values()) == {"denied ENOENT"} and access == "ok False", metadata
    else:  # the unprivileged posture: metadata of host paths is visible
        assert metadata["stat"] == "ok 9" and metadata["readlink"] == f"ok {str(secret)!r}"
        assert access == "ok True"
