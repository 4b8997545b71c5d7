"""Layers 2-4: what a freshly forked child does to itself before it runs plugin code.

The fork server calls `JailPlan.detect()` once at start (which layers this host allows, and the
expensive preparations: the namespaces, the seccomp filter, the empty root), then each child calls
`plan.enter(...)` right after fork. Everything per run is a syscall or two: the per-run cost of a
layer must stay small (the throughput targets in docs/benchmarks.md).

The posture (how the fork server gets its namespaces) is decided once:

- `root`: the fork server unshares network, IPC and mount namespaces itself; runs get a per-run uid.
- `userns`: not root, but the host allows unprivileged user namespaces: the fork server enters a new
  user namespace (mapping only its own uid) and, inside it, new network, IPC and mount namespaces.
  Runs share that one uid (a per-run uid needs a range of host uids) and drop every capability.
- `unprivileged`: not root and user namespaces refused (Docker's default seccomp profile, many
  Kubernetes clusters): no namespaces, no empty root; seccomp and Landlock are what is left.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import struct
import tempfile
from dataclasses import dataclass, field
from typing import Any

from sandbox.layers import ALWAYS_ON, ROOT, UNPRIVILEGED, USERNS

_libc = ctypes.CDLL(None, use_errno=True)

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_SET_DUMPABLE = 4
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWTIME = 0x00000080
CLONE_THREAD = 0x00010000
NAMESPACE_FLAGS = (
    CLONE_NEWNET
    | CLONE_NEWUSER
    | CLONE_NEWNS
    | CLONE_NEWPID
    | CLONE_NEWIPC
    | CLONE_NEWCGROUP
    | CLONE_NEWUTS
    | CLONE_NEWTIME
)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REC, MS_PRIVATE = 1 << 14, 1 << 18
MNT_DETACH = 2
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# Landlock (Linux 5.13+): deny every filesystem access right and, from ABI 4, TCP bind/connect.
_SYS_landlock_create_ruleset = 444
_SYS_landlock_restrict_self = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_RIGHTS = 0b11
# ABI 6: the sandboxed process may neither connect to an abstract Unix socket nor signal a process
# created outside its Landlock domain.
LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET = 1
LANDLOCK_SCOPE_SIGNAL = 2
_SCOPES = LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL


RUN_NICENESS = 5
NPROC_PER_RUN = 16  # processes a run may have at once (a fork bomb stops here)
NOFILE_PER_RUN = 32
# Signals queued and POSIX timers held at once (each timer is kernel memory outside RLIMIT_AS,
# and the count is per uid: red team made 96,365 timers in one run, the host's default).
SIGPENDING_PER_RUN = 32
UID_BASE = 200_000  # runs get uid UID_BASE + n: unprivileged, and not shared with other runs
UID_SPAN = 50_000


def prctl(option: int, arg: int = 0) -> None:
    if _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


class _LandlockRulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


def landlock_abi() -> int:
    abi = _libc.syscall(_SYS_landlock_create_ruleset, None, 0, _LANDLOCK_CREATE_RULESET_VERSION)
    return int(abi) if abi > 0 else 0


def landlock_ruleset(abi: int) -> int:
    """A ruleset denying every right this ABI knows, with the ABI 6 scopes where available."""
    fs = _FS_RIGHTS_BY_ABI[max(k for k in _FS_RIGHTS_BY_ABI if k <= abi)]
    attr = _LandlockRulesetAttr(fs, _NET_RIGHTS if abi >= 4 else 0, _SCOPES if abi >= 6 else 0)
    u64 = ctypes.sizeof(ctypes.c_uint64)
    size = 3 * u64 if abi >= 6 else 2 * u64 if abi >= 4 else u64
    fd = _libc.syscall(_SYS_landlock_create_ruleset, ctypes.byref(attr), size, 0)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"landlock_create_ruleset: {os.strerror(err)}")
    return int(fd)


def landlock_restrict(ruleset_fd: int) -> None:
    """Enter the ruleset's domain (needs no_new_privs)."""
    if _libc.syscall(_SYS_landlock_restrict_self, ruleset_fd, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"landlock_restrict_self: {os.strerror(err)}")


# The child needs only the channel it was handed: no new socket of any family (Unix included),
# no connecting, binding, listening or accepting.
SOCKET_CALLS = ("socket", "socketpair", "connect", "bind", "listen", "accept", "accept4")
# SysV IPC objects outlive the process that made them (until IPC_RMID or reboot) and are shared by
# every process of an IPC namespace: refused outright, so no run leaves state or memory behind
# and no two runs share a channel. POSIX message queues likewise (a filesystem of their own).
IPC_CALLS = (
    "shmget",
    "shmat",
    "shmdt",
    "shmctl",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "semget",
    "semop",
    "semtimedop",
    "semctl",
    "ipc",  # the multiplexer of some architectures
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedreceive",
    "mq_notify",
    "mq_getsetattr",
)


METADATA_CALLS = (
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "utime",
    "utimes",
    "futimesat",
    "utimensat",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "setxattrat",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "removexattrat",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "getxattrat",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "listxattrat",
)


def _build_seccomp() -> Any:
    """A filter that allows everything Python needs and refuses, with EPERM: every socket call but
    reading and writing the inherited one, SysV and POSIX IPC, ptrace and reading other processes'
    memory, signalling anyone, leaving the session or process group, new namespaces, mounts,
    kernel keyrings, BPF, io_uring (which bypasses seccomp)."""
    import pyseccomp as sc

    f = sc.SyscallFilter(defaction=sc.ALLOW)
    deny = sc.ERRNO(errno.EPERM)
    for name in (
        *SOCKET_CALLS,
        *IPC_CALLS,
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
        # Watching host paths: without the empty root (the unprivileged posture) Landlock lets
        # inotify watch any host directory, whose events name the files created, opened or
        # deleted in it (red team); unused here.
        "inotify_init",
        "inotify_init1",
        "inotify_add_watch",
        "fanotify_init",
        "fanotify_mark",
        # Changing or reading a file's metadata, which Landlock does not cover: without the empty
        # root (the unprivileged posture) a run holds the supervisor's uid and chmod-ed,
        # chown-ed, re-dated and wrote extended attributes of its files (red team). Unused here.
        *METADATA_CALLS,
        # Another process's scheduling: neither Landlock nor the uid stops it where runs keep
        # the supervisor's uid (userns, unprivileged): setpriority(PRIO_USER), SCHED_IDLE or an
        # affinity for the supervisor's pid would starve it behind a CPU-bound run (red team).
        # The run's own niceness is set before the filter.
        "setpriority",
        "sched_setscheduler",
        "sched_setparam",
        "sched_setattr",
        "sched_setaffinity",
        "ioprio_set",
        "migrate_pages",
        "move_pages",
        "set_mempolicy_home_node",
        # Host-wide effects or reads with no privilege needed: sync() flushes every file
        # system's dirty pages (in a loop, an I/O storm under the database's fsyncs); syslog()
        # reads the kernel log where dmesg_restrict is 0 (red team).
        "sync",
        "syncfs",
        "syslog",
        # Linux AIO: every context reserves events from one host-wide budget (fs.aio-max-nr,
        # 65,536 by default): one run took all of it and every other process of the host got
        # EAGAIN from io_setup while it ran (red team). Unused here.
        "io_setup",
        "io_destroy",
        "io_submit",
        "io_cancel",
        "io_getevents",
        "io_pgetevents",
        # x86's per-process descriptor tables: unused, and a long-standing kernel attack surface.
        "modify_ldt",
    ):
        try:
            f.add_rule(deny, name)
        except Exception:  # a syscall this architecture does not have
            continue
    # No new namespaces through clone either; clone3's flags cannot be inspected: ENOSYS makes
    # glibc fall back to clone.
    _deny_namespace_clones(f, deny)
    _deny_new_processes(f, deny)
    _deny_signal_owners(f, deny)
    _deny_out_of_band(f, deny)
    return f


MSG_OOB = 0x1


def _deny_out_of_band(f: Any, deny: Any) -> None:
    """No MSG_OOB on the channel, either way. Out-of-band data on Unix stream sockets (Linux
    5.15+) is used by nothing here and has had kernel memory-safety bugs reachable from a
    sandbox (CVE-2025-38236 was exploited from Chrome's renderer, which now refuses it too);
    a run could send it to the supervisor's socket (red team)."""
    import pyseccomp as sc

    for name, flags_arg in (
        ("sendto", 3),
        ("recvfrom", 3),
        ("sendmsg", 2),
        ("recvmsg", 2),
        ("sendmmsg", 3),
        ("recvmmsg", 3),
    ):
        f.add_rule(deny, name, sc.Arg(flags_arg, sc.MASKED_EQ, MSG_OOB, MSG_OOB))


def _deny_new_processes(f: Any, deny: Any) -> None:
    """A run is one process: no `fork`, `vfork`, nor `clone` without CLONE_THREAD (threads stay
    possible; a thread shares its process's address space and CPU clock). The limits are per
    process (RLIMIT_AS, RLIMIT_CPU): a forked child gets a budget of its own, so 15 children of
    a 128 MB run held 1.3 GB, and a chain of children each exiting before its CPU limit used 9
    CPU seconds of a 1-second run (red team). No restricted plugin can fork (no module that
    does is allowed): only code that escaped layer 1 could."""
    import pyseccomp as sc

    f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
    for name in ("fork", "vfork"):
        try:
            f.add_rule(deny, name)
        except Exception:  # aarch64 has neither: glibc forks with clone
            continue


# Making another process the owner of a descriptor (fcntl F_SETOWN/F_SETOWN_EX, or the ioctls
# FIOSETOWN/SIOCSPGRP on a socket) makes the kernel send it SIGIO, or any signal chosen with
# F_SETSIG (SIGKILL, SIGSTOP), when the descriptor becomes ready: a signal that passes no `kill`
# call. The kernel only checks the uids, which a non-root supervisor, its fork server and its runs
# share; Landlock's signal scope (ABI 6) stops it too, but not every host has that.
F_SETOWN = 8
F_SETOWN_EX = 15
# Growing a pipe's buffer (up to /proc/sys/fs/pipe-max-size, 1 MiB by default) is kernel memory
# outside RLIMIT_AS: refused, so the pipes a run can open hold at most their default 64 KiB each.
F_SETPIPE_SZ = 1031
FIOSETOWN = 0x8901
SIOCSPGRP = 0x8902


def _deny_signal_owners(f: Any, deny: Any) -> None:
    import pyseccomp as sc

    for name in ("fcntl", "fcntl64"):
        for cmd in (F_SETOWN, F_SETOWN_EX, F_SETPIPE_SZ):
            try:
                f.add_rule(deny, name, sc.Arg(1, sc.EQ, cmd))
            except Exception:  # a syscall this architecture does not have
                continue
    for request in (FIOSETOWN, SIOCSPGRP):
        f.add_rule(deny, "ioctl", sc.Arg(1, sc.EQ, request))


def _deny_namespace_clones(f: Any, deny: Any) -> None:
    import pyseccomp as sc

    for flag in (
        CLONE_NEWUSER,
        CLONE_NEWNS,
        CLONE_NEWNET,
        CLONE_NEWPID,
        CLONE_NEWIPC,
        CLONE_NEWUTS,
        CLONE_NEWCGROUP,
    ):
        f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")


def refuse_namespaces() -> None:
    """Make this process a host that refuses namespaces to the unprivileged, as Docker's default
    seccomp profile does: `unshare`, and `clone` with a namespace flag, fail with EPERM. A test
    hook (`Sandbox(userns=False)`, `PLUGIN_RUNTIME_REFUSE_USERNS=1`): with it the fork server
    really meets the refusal, so the `unprivileged` posture is reproduced, not described."""
    import pyseccomp as sc

    f = sc.SyscallFilter(defaction=sc.ALLOW)
    deny = sc.ERRNO(errno.EPERM)
    f.add_rule(deny, "unshare")
    _deny_namespace_clones(f, deny)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    f.load()


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


# Syscall numbers are the same on every architecture from 424 on. The named rules above were
# reviewed against the syscalls up to futex_requeue (456), the last this libseccomp can name;
# later ones (statmount and listmount, which list mounts; setxattrat and file_setattr, metadata
# writes Landlock does not cover; ...) it cannot filter by name, so a deny-list would let them
# through (red team: setxattrat reached the kernel). Every syscall from 457 on is refused with
# ENOSYS, as on an older kernel, by a second, hand-written filter.
FIRST_UNREVIEWED_SYSCALL = 457
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_ERRNO = 0x00050000


def newer_syscalls_filter(machine: str | None = None) -> CompiledSeccomp | None:
    """BPF: on this architecture, syscall numbers from FIRST_UNREVIEWED_SYSCALL up fail with
    ENOSYS; everything else is left to the main filter (which kills foreign ABIs)."""
    arch = _AUDIT_ARCH.get(machine or os.uname().machine)
    if arch is None:
        return None
    program = [
        (0x20, 0, 0, 4),  # ld [4]: the architecture
        (0x15, 0, 3, arch),  # jeq arch, else allow
        (0x20, 0, 0, 0),  # ld [0]: the syscall number
        (0x35, 0, 1, FIRST_UNREVIEWED_SYSCALL),  # jge first, else allow
        (0x06, 0, 0, _SECCOMP_RET_ERRNO | errno.ENOSYS),
        (0x06, 0, 0, _SECCOMP_RET_ALLOW),
    ]
    return CompiledSeccomp(b"".join(struct.pack("<HBBI", *insn) for insn in program))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def drop_capabilities() -> None:
    """Drop every capability (effective, permitted, inheritable, ambient). Inside our user
    namespace the fork server holds them all; a run keeps none, and its uid is not 0 there, so
    no execve gives them back."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)


def _unshare(flags: int, what: str) -> None:
    if _libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare({what}): {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str) -> None:
    _libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    enc = [None if v is None else v.encode() for v in (source, target, fstype, data or None)]
    if _libc.mount(enc[0], enc[1], enc[2], flags, enc[3]) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount({target}): {os.strerror(err)}")


def _enter_user_namespace() -> None:
    """A new user namespace mapping only our own uid and gid (all an unprivileged process may
    map), in which this process holds every capability; then no more setgroups."""
    uid, gid = os.geteuid(), os.getegid()
    _unshare(CLONE_NEWUSER, "CLONE_NEWUSER")
    for name, text in (
        ("setgroups", "deny"),
        ("uid_map", f"{uid} {uid} 1"),
        ("gid_map", f"{gid} {gid} 1"),
    ):
        with open(f"/proc/self/{name}", "w") as fh:
            fh.write(text)


def _detached_empty_root() -> int:
    """An empty, read-only, one-inode tmpfs, reachable only through the returned O_PATH descriptor:
    mounted on a fresh temporary directory of this (private) mount namespace, opened, detached,
    and the directory removed. Nothing of it is left on the host, even if we are killed later."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE, "")  # nothing we mount propagates to the host
    path = tempfile.mkdtemp(prefix="plugin-runtime-root-")
    try:
        _mount(
            "plugin-runtime-empty-root",
            path,
            "tmpfs",
            MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
            "size=4k,nr_inodes=1,mode=0555",
        )
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        if _libc.umount2(path.encode(), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"umount2: {os.strerror(err)}")
        return fd
    finally:
        os.rmdir(path)


@dataclass
class JailPlan:
    """Which layers this host allows, decided once in the fork server."""

    layers: dict[str, bool] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    posture: str = UNPRIVILEGED
    posture_reason: str = ""
    is_root: bool = False
    in_userns: bool = False
    empty_root_fd: int | None = None  # an O_PATH descriptor of the empty root each run chroots to
    empty_root_dir: str | None = None  # only when it is a host directory (no mount namespace)
    seccomp_filter: CompiledSeccomp | None = None
    seccomp_newer: CompiledSeccomp | None = None  # refuses syscalls newer than the review
    landlock_abi: int = 0
    landlock_ruleset: int | None = None  # a deny-all ruleset fd, made once, kept open

    @classmethod
    def detect(cls, *, enter_netns: bool = True) -> JailPlan:
        plan = cls(is_root=os.geteuid() == 0)
        for always in ALWAYS_ON:
            plan.layers[always] = True
        if plan.is_root:
            plan.posture = ROOT
            plan.posture_reason = "the supervisor is root"
        else:
            try:
                _enter_user_namespace()
                plan.in_userns = True
                plan.posture = USERNS
                plan.posture_reason = (
                    "not root; the host allows unprivileged user namespaces: the fork server "
                    "entered one, with network, IPC and mount namespaces inside"
                )
            except OSError as exc:
                plan.posture = UNPRIVILEGED
                plan.posture_reason = f"not root, and the host refuses user namespaces ({exc})"
        can_unshare = plan.is_root or plan.in_userns
        plan.layers["uid_drop"] = plan.is_root
        if plan.in_userns:
            plan.reasons["uid_drop"] = (
                "a per-run uid needs a range of host uids (root, or /etc/subuid and newuidmap): "
                "runs share the supervisor's uid, drop every capability, and are kept apart by "
                "seccomp, Landlock, the empty root and being non-dumpable"
            )
        elif not plan.is_root:
            plan.reasons["uid_drop"] = "the supervisor is not root: runs keep its uid"
        # The fork server itself moves into empty network and IPC namespaces once: every child
        # inherits "no network" and "no host IPC objects" for free (fetch is done outside).
        plan.layers["netns"] = plan._try_unshare(
            "netns",
            CLONE_NEWNET,
            "CLONE_NEWNET",
            can_unshare and enter_netns,
            "disabled by the caller" if can_unshare else NEEDS_NAMESPACES,
        )
        plan.layers["ipcns"] = plan._try_unshare(
            "ipcns", CLONE_NEWIPC, "CLONE_NEWIPC", can_unshare, NEEDS_NAMESPACES
        )
        # The empty root each run is chrooted into: a detached tmpfs in a private mount
        # namespace; as root without one (a container refusing unshare), an empty directory.
        if can_unshare:
            try:
                _unshare(CLONE_NEWNS, "CLONE_NEWNS")
                plan.empty_root_fd = _detached_empty_root()
            except OSError as exc:
                plan.reasons["chroot"] = f"no private mount namespace: {exc}"
                if plan.is_root:
                    plan.empty_root_dir = tempfile.mkdtemp(prefix="plugin-runtime-root-")
                    os.chmod(plan.empty_root_dir, 0o555)
                    plan.empty_root_fd = os.open(
                        plan.empty_root_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
                    )
                    del plan.reasons["chroot"]
        else:
            plan.reasons["chroot"] = NEEDS_NAMESPACES
        plan.layers["chroot"] = plan.empty_root_fd is not None
        try:
            plan.seccomp_filter = CompiledSeccomp.from_filter(_build_seccomp())
            plan.seccomp_newer = newer_syscalls_filter()
            plan.layers["seccomp"] = True
        except Exception as exc:  # libseccomp missing, or the kernel lacks seccomp
            plan.layers["seccomp"] = False
            plan.reasons["seccomp"] = f"unavailable: {exc}"
        plan.landlock_abi = landlock_abi()
        if plan.landlock_abi:
            try:
                plan.landlock_ruleset = landlock_ruleset(plan.landlock_abi)
            except OSError as exc:
                plan.reasons["landlock"] = str(exc)
        else:
            plan.reasons["landlock"] = "kernel has no Landlock"
        plan.layers["landlock"] = plan.landlock_ruleset is not None
        plan.layers["landlock_scope"] = plan.layers["landlock"] and plan.landlock_abi >= 6
        if not plan.layers["landlock_scope"]:
            plan.reasons["landlock_scope"] = (
                f"Landlock ABI {plan.landlock_abi} < 6 (Linux 6.12)"
                if plan.layers["landlock"]
                else "needs Landlock"
            )
        return plan

    def _try_unshare(self, layer: str, flags: int, what: str, allowed: bool, why_not: str) -> bool:
        if not allowed:
            self.reasons[layer] = why_not
            return False
        try:
            _unshare(flags, what)
            return True
        except OSError as exc:
            self.reasons[layer] = str(exc)
            return False

    def close(self) -> None:
        if self.empty_root_dir:
            try:
                os.rmdir(self.empty_root_dir)
            except OSError:
                pass

    def enter(
        self,
        channel_fd: int,
        *,
        timeout_s: float,
        cpu_s: float,
        memory_mb: int,
        run_seq: int,
        fork_server_pid: int | None = None,
    ) -> None:
        """Run in the child, right after fork, before any plugin code. Order matters: limits and
        identity first (they need privilege), then the filters that forbid changing them.
        `fork_server_pid`: the forking process's pid, which it knows (saves a getppid)."""
        fork_server = os.getppid() if fork_server_pid is None else fork_server_pid
        # Its own process group (the watchdog kills the group), in the fork server's session:
        # a new session would be a new scheduler autogroup, where RUN_NICENESS ranks the run
        # below nothing but itself (red team). The run holds no descriptor of a terminal.
        os.setpgid(0, 0)
        if self.empty_root_fd is not None:
            os.fchdir(self.empty_root_fd)  # the cwd keeps the empty root once its fd is closed
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
            (resource.RLIMIT_FSIZE, (0, 0)),  # also caps memfd and tmpfs files: no memory there
            (resource.RLIMIT_CORE, (0, 0)),
            (resource.RLIMIT_NOFILE, (NOFILE_PER_RUN, NOFILE_PER_RUN)),
            (resource.RLIMIT_NPROC, (NPROC_PER_RUN, NPROC_PER_RUN)),
            (resource.RLIMIT_SIGPENDING, (SIGPENDING_PER_RUN, SIGPENDING_PER_RUN)),
        )
        for which, value in limits:
            resource.setrlimit(which, value)
        # Below the supervisor and the database: a plugin that burns CPU slows other runs at
        # worst, never the scheduling of them.
        os.nice(RUN_NICENESS)
        if self.empty_root_fd is not None:
            os.chroot(".")
        if self.is_root:
            uid = UID_BASE + run_seq % UID_SPAN
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        elif self.in_userns:
            drop_capabilities()
        # Die with the fork server. Set after the uid change, which clears it; and if the fork
        # server died before this line, the signal will never come: leave now.
        prctl(PR_SET_PDEATHSIG, 9)
        if os.getppid() != fork_server:
            os._exit(1)
        prctl(PR_SET_DUMPABLE, 0)  # no core, no ptrace attach by same-uid processes
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        if self.landlock_ruleset is not None:
            landlock_restrict(self.landlock_ruleset)
            os.close(self.landlock_ruleset)
        if self.seccomp_filter is not None:
            self.seccomp_filter.load()
            if self.seccomp_newer is not None:
                self.seccomp_newer.load()


NEEDS_NAMESPACES = "needs root or a user namespace"
REFUSE_USERNS_ENV = "PLUGIN_RUNTIME_REFUSE_USERNS"


def userns_allowed() -> bool:
    """Whether this host lets an unprivileged process make a user namespace, tried in a
    throw-away child process (and refused when the test hook says so)."""
    if os.environ.get(REFUSE_USERNS_ENV) == "1":
        return False
    probe = "import ctypes, os; os._exit(0 if ctypes.CDLL(None).unshare(0x10000000) == 0 else 1)"
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


def host_layers() -> dict[str, bool]:
    """Which layers this host would give a fork server, predicted without side effects (no
    namespace entered here, no filter built): for tests and tools that must decide before
    starting one. `tests/integration/test_defence_in_depth.py` checks it against what a fork
    server reports."""
    root = os.geteuid() == 0
    try:
        import pyseccomp  # noqa: F401 - loads libseccomp

        seccomp = True
    except Exception:
        seccomp = False
    namespaces = root or userns_allowed()
    abi = landlock_abi()
    layers = dict.fromkeys(ALWAYS_ON, True)
    layers.update(
        uid_drop=root,
        netns=namespaces,
        ipcns=namespaces,
        chroot=namespaces,
        seccomp=seccomp,
        landlock=abi > 0,
        landlock_scope=abi >= 6,
    )
    return layers


def host_posture() -> str:
    """The posture a fork server started now would take (see the module docstring)."""
    if os.geteuid() == 0:
        return ROOT
    return USERNS if userns_allowed() else UNPRIVILEGED


def become_fork_server() -> None:
    """The fork server adopts every orphan of its runs (so a double fork cannot escape the
    watchdog) and dies with the supervisor."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    prctl(PR_SET_PDEATHSIG, 9)
