"""The sandbox's layers and postures by name, and what an escaped plugin can reach when a layer is
off: shared by the jail (which decides them), `serve --require-layers`, `doctor` and the docs.
How each layer is built is sandbox/jail.py's business."""

from __future__ import annotations

# Postures: how the fork server gets its namespaces (sandbox/jail.py says how).
ROOT = "root"  # the supervisor is root
USERNS = "userns"  # not root; a user namespace gives the fork server the other namespaces
UNPRIVILEGED = "unprivileged"  # not root and user namespaces refused: no namespace at all
POSTURES = (ROOT, USERNS, UNPRIVILEGED)

ALWAYS_ON = ("restricted_python", "clean_env", "session", "no_new_privs", "rlimits", "watchdog")

# What an escaped plugin can reach when a layer is off: doctor's warning and SECURITY.md.
EXPOSES = {
    "restricted_python": "plain Python: every escape class of layer 1",
    "clean_env": "the supervisor's environment (database URL, secrets)",
    "session": "the supervisor's open descriptors, and leaving the watchdog's process group",
    "no_new_privs": "privileges gained through setuid executables",
    "rlimits": "unbounded CPU, memory, processes and descriptors",
    "watchdog": "runs that never end",
    "uid_drop": "runs share one uid: one process budget (RLIMIT_NPROC) between them, and files "
    "and processes of that uid wherever the other layers are off",
    "chroot": "the host's filesystem tree (stat of any path; pathname Unix sockets such as "
    "PostgreSQL's where seccomp is off)",
    "netns": "the host's network (and its abstract Unix sockets) where seccomp is off",
    "ipcns": "the host's SysV and POSIX IPC objects where seccomp is off",
    "seccomp": "new sockets (the network, PostgreSQL's Unix socket), SysV shared memory that "
    "outlives the run, ptrace, signals, namespaces and mounts",
    "landlock": "reading and writing host files with the run's uid",
    "landlock_scope": "abstract Unix sockets and signals to processes outside the run where "
    "seccomp is off",
}
LAYERS = tuple(EXPOSES)


def parse_layer_list(text: str) -> list[str]:
    """`seccomp,landlock netns` -> the names, checked; ValueError names an unknown one."""
    names = [n for n in text.replace(",", " ").split() if n]
    unknown = [n for n in names if n not in EXPOSES]
    if unknown:
        raise ValueError(f"unknown sandbox layer '{unknown[0]}' (known: {', '.join(LAYERS)})")
    return names
