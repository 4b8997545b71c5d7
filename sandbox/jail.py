"""Layers 2-4: what a freshly forked child does to itself before it runs plugin code.

The fork server calls `JailPlan.detect()` once at start (which layers this host allows, and the
expensive preparations: the seccomp filter, the empty root), then each child calls
`plan.enter(...)` right after fork. Everything here is a syscall or two: the per-run cost of a
layer must stay small (the throughput targets in docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import socket
import tempfile
from dataclasses import dataclass, field
from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_SET_DUMPABLE = 4
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000

# Landlock (Linux 5.13+): deny every filesystem access right and, from ABI 4, TCP bind/connect.
_SYS_landlock_create_ruleset = 444
_SYS_landlock_restrict_self = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_RIGHTS = 0b11

RUN_NICENESS = 5
NPROC_PER_RUN = 16  # processes a run may have at once (a fork bomb stops here)
NOFILE_PER_RUN = 32
UID_BASE = 200_000  # runs get uid UID_BASE + n: unprivileged, and not shared with other runs
UID_SPAN = 50_000


def prctl(option: int, arg: int = 0) -> None:
    if _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


class _LandlockRulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64)]


def landlock_abi() -> int:
    abi = _libc.syscall(_SYS_landlock_create_ruleset, None, 0, _LANDLOCK_CREATE_RULESET_VERSION)
    return int(abi) if abi > 0 else 0


def _landlock_ruleset(abi: int) -> int:
    fs = _FS_RIGHTS_BY_ABI[max(k for k in _FS_RIGHTS_BY_ABI if k <= abi)]
    attr = _LandlockRulesetAttr(fs, _NET_RIGHTS if abi >= 4 else 0)
    size = ctypes.sizeof(attr) if abi >= 4 else ctypes.sizeof(ctypes.c_uint64)
    fd = _libc.syscall(_SYS_landlock_create_ruleset, ctypes.byref(attr), size, 0)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"landlock_create_ruleset: {os.strerror(err)}")
    return int(fd)


def _build_seccomp() -> Any:
    """A filter that allows everything Python needs and refuses, with EPERM: sockets other than
    AF_UNIX, ptrace and reading other processes' memory, signalling anyone, leaving the session or
    process group, new namespaces, mounts, kernel keyrings, BPF, io_uring (which bypasses seccomp)."""
    import pyseccomp as sc

    f = sc.SyscallFilter(defaction=sc.ALLOW)
    deny = sc.ERRNO(errno.EPERM)
    f.add_rule(deny, "socket", sc.Arg(0, sc.NE, socket.AF_UNIX))
    for name in (
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "kill",
        "tkill",
        "tgkill",
        "rt_sigqueueinfo",
        "rt_tgsigqueueinfo",
        "pidfd_send_signal",
        "pidfd_open",
        "pidfd_getfd",
        "setsid",
        "setpgid",
        "unshare",
        "setns",
        "mount",
        "umount2",
        "pivot_root",
        "chroot",
        "move_mount",
        "open_tree",
        "fsopen",
        "bpf",
        "perf_event_open",
        "keyctl",
        "add_key",
        "request_key",
        "userfaultfd",
        "init_module",
        "finit_module",
        "delete_module",
        "kexec_load",
        "reboot",
        "swapon",
        "swapoff",
        "acct",
        "settimeofday",
        "clock_settime",
        "personality",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "setrlimit",
        "prlimit64",
    ):
        try:
            f.add_rule(deny, name)
        except Exception:  # a syscall this architecture does not have
            continue
    # No new namespaces through clone either; clone3's flags cannot be inspected: ENOSYS makes
    # glibc fall back to clone.
    f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
    f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_NEWNS, CLONE_NEWNS))
    f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_NEWNET, CLONE_NEWNET))
    f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_NEWPID, CLONE_NEWPID))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    return f


PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class CompiledSeccomp:
    """The filter compiled to BPF once, in the fork server: a child loads it with one prctl
    instead of having libseccomp generate it again (about 1 ms per run)."""

    def __init__(self, bpf: bytes) -> None:
        if not bpf or len(bpf) % 8:
            raise ValueError("invalid BPF program")
        self._buffer = ctypes.create_string_buffer(bpf, len(bpf))
        self._prog = _SockFprog(len(bpf) // 8, ctypes.cast(self._buffer, ctypes.c_void_p))

    @classmethod
    def from_filter(cls, seccomp_filter: Any) -> CompiledSeccomp:
        fd = os.memfd_create("plugin-runtime-seccomp")
        try:
            with os.fdopen(os.dup(fd), "rb") as reader:
                seccomp_filter.export_bpf(reader)
                os.lseek(fd, 0, os.SEEK_SET)
                return cls(os.read(fd, 1 << 20))
        finally:
            os.close(fd)

    def load(self) -> None:
        """Needs no_new_privs (set before)."""
        if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(self._prog), 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"seccomp: {os.strerror(err)}")


@dataclass
class JailPlan:
    """Which layers this host allows, decided once in the fork server."""

    layers: dict[str, bool] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    is_root: bool = False
    empty_root: str | None = None
    seccomp_filter: CompiledSeccomp | None = None
    landlock_abi: int = 0
    landlock_ruleset: int | None = None  # a deny-all ruleset fd, made once, kept open

    @classmethod
    def detect(cls, *, enter_netns: bool = True) -> JailPlan:
        plan = cls(is_root=os.geteuid() == 0)
        plan.layers["restricted_python"] = True
        plan.layers["clean_env"] = True
        plan.layers["session"] = True
        plan.layers["no_new_privs"] = True
        plan.layers["rlimits"] = True
        plan.layers["watchdog"] = True
        plan.layers["uid_drop"] = plan.is_root
        if not plan.is_root:
            plan.reasons["uid_drop"] = "supervisor is not root: runs keep its uid"
        # An empty, unwritable root directory to chroot each child into (root only).
        if plan.is_root:
            plan.empty_root = tempfile.mkdtemp(prefix="plugin-runtime-root-")
            os.chmod(plan.empty_root, 0o555)
        plan.layers["chroot"] = plan.empty_root is not None
        if not plan.layers["chroot"]:
            plan.reasons["chroot"] = "needs root"
        # The fork server itself moves into an empty network namespace once: every child then
        # inherits "no network" for free (fetch is done by the supervisor, outside).
        plan.layers["netns"] = False
        if enter_netns:
            try:
                if not plan.is_root:
                    raise PermissionError("needs root")
                if _libc.unshare(CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
                plan.layers["netns"] = True
            except OSError as exc:
                plan.reasons["netns"] = str(exc)
        try:
            plan.seccomp_filter = CompiledSeccomp.from_filter(_build_seccomp())
            plan.layers["seccomp"] = True
        except Exception as exc:  # libseccomp missing, or the kernel lacks seccomp
            plan.layers["seccomp"] = False
            plan.reasons["seccomp"] = f"unavailable: {exc}"
        plan.landlock_abi = landlock_abi()
        if plan.landlock_abi:
            try:
                plan.landlock_ruleset = _landlock_ruleset(plan.landlock_abi)
            except OSError as exc:
                plan.reasons["landlock"] = str(exc)
        else:
            plan.reasons["landlock"] = "kernel has no Landlock"
        plan.layers["landlock"] = plan.landlock_ruleset is not None
        return plan

    def enter(
        self,
        channel_fd: int,
        *,
        timeout_s: float,
        cpu_s: float,
        memory_mb: int,
        run_seq: int,
    ) -> None:
        """Run in the child, right after fork, before any plugin code. Order matters: limits and
        identity first (they need privilege), then the filters that forbid changing them."""
        fork_server = os.getppid()
        os.setsid()  # own session and process group: the watchdog kills the group
        keep = sorted(
            {channel_fd} | ({self.landlock_ruleset} if self.landlock_ruleset is not None else set())
        )
        low = 0
        for fd in keep:  # close every inherited descriptor but the channel (and the ruleset)
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, 65536)
        cpu = max(1, int(-(-cpu_s // 1)))
        limits = (
            (resource.RLIMIT_CPU, (cpu, cpu + 1)),
            (resource.RLIMIT_AS, (memory_mb * 1024 * 1024,) * 2),
            (resource.RLIMIT_FSIZE, (0, 0)),
            (resource.RLIMIT_CORE, (0, 0)),
            (resource.RLIMIT_NOFILE, (NOFILE_PER_RUN, NOFILE_PER_RUN)),
            (resource.RLIMIT_NPROC, (NPROC_PER_RUN, NPROC_PER_RUN)),
        )
        for which, value in limits:
            resource.setrlimit(which, value)
        # Below the supervisor and the database: a plugin that burns CPU slows other runs at
        # worst, never the scheduling of them.
        os.nice(RUN_NICENESS)
        if self.empty_root is not None:
            os.chroot(self.empty_root)
            os.chdir("/")
        if self.is_root:
            uid = UID_BASE + run_seq % UID_SPAN
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        # Die with the fork server. Set after the uid change, which clears it; and if the fork
        # server died before this line, the signal will never come: leave now.
        prctl(PR_SET_PDEATHSIG, 9)
        if os.getppid() != fork_server:
            os._exit(1)
        prctl(PR_SET_DUMPABLE, 0)  # no core, no ptrace attach by same-uid processes
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        if self.landlock_ruleset is not None:
            if _libc.syscall(_SYS_landlock_restrict_self, self.landlock_ruleset, 0) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"landlock_restrict_self: {os.strerror(err)}")
            os.close(self.landlock_ruleset)
        if self.seccomp_filter is not None:
            self.seccomp_filter.load()


def host_layers() -> dict[str, bool]:
    """Which layers this host would give a fork server, predicted without side effects (no
    namespace entered, no filter built): for tests and tools that must decide before starting
    one. `tests/integration/test_defence_in_depth.py` checks it against what a fork server reports."""
    root = os.geteuid() == 0
    try:
        import pyseccomp  # noqa: F401 - loads libseccomp

        seccomp = True
    except Exception:
        seccomp = False
    layers = dict.fromkeys(
        ("restricted_python", "clean_env", "session", "no_new_privs", "rlimits", "watchdog"), True
    )
    layers.update(
        uid_drop=root, chroot=root, netns=root, seccomp=seccomp, landlock=landlock_abi() > 0
    )
    return layers


def become_fork_server() -> None:
    """The fork server adopts every orphan of its runs (so a double fork cannot escape the
    watchdog) and dies with the supervisor."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    prctl(PR_SET_PDEATHSIG, 9)
