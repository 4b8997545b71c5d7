"""deploy/kubernetes/seccomp/plugin-runtime.json, the Localhost seccomp profile of the `userns`
Deployment, applied for real: the profile is compiled with libseccomp exactly as a container
runtime reads it (default action, then each rule), loaded with no_new_privs into a process that
then execs `plugin-runtime run --json`. Under it a run keeps every layer the host gives without
it (as root: every layer; as an unprivileged user: its posture's), and the calls it denies are
really denied. `.ci/attacks-unprivileged` runs this file as an unprivileged user too."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyseccomp
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "deploy" / "kubernetes" / "seccomp" / "plugin-runtime.json"
DEPLOYMENT = ROOT / "deploy" / "kubernetes" / "deployment-userns.yaml"
ACTIONS = {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"}  # all this profile may use

# Loads the profile (argv[1]) as a container runtime would, probes denied calls, then execs
# argv[2:]. Each probe's arguments make the call fail with something other than EPERM when it
# is allowed (no such process, bad flags), so EPERM can only come from the filter.
_APPLY = r"""
import ctypes, errno, json, os, sys
import pyseccomp as sc
profile = json.load(open(sys.argv[1]))
if profile is not None:
    actions = {"SCMP_ACT_ALLOW": sc.ALLOW}
    f = sc.SyscallFilter(defaction=actions[profile["defaultAction"]])
    for rule in profile["syscalls"]:
        action = sc.ERRNO(rule["errnoRet"]) if rule["action"] == "SCMP_ACT_ERRNO" else sc.ALLOW
        for name in rule["names"]:
            f.add_rule(action, name)
    ctypes.CDLL(None).prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS, as runtimes load profiles
    f.load()
libc = ctypes.CDLL(None, use_errno=True)
nobody = 0x7FFFFFFF
probes = {
    "kcmp": (nobody, nobody, 0, 0, 0),
    "process_vm_readv": (nobody, 0, 0, 0, 0, 0),
    "ptrace": (2, nobody, 0, 0),  # PTRACE_PEEKDATA
    "userfaultfd": (0xFFFF,),
    "setns": (-1, 0),
}
seen = {}
for name, args in probes.items():
    nr = sc.resolve_syscall(sc.Arch.NATIVE, name)
    ctypes.set_errno(0)
    rc = libc.syscall(nr, *args)
    seen[name] = errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno())) if rc == -1 else "ok"
os.write(2, ("PROBES " + json.dumps(seen) + "\n").encode())
os.execv(sys.argv[2], sys.argv[2:])
"""


def profile() -> dict[str, Any]:
    return json.loads(PROFILE.read_text())


def run_under(profile_path: Path | None, tmp_path: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """(the probes' errnos, `plugin-runtime run --json`'s report) with the profile loaded, or
    with no profile when `profile_path` is None."""
    null = tmp_path / "none.json"
    null.write_text("null")
    exe = str(Path(sys.executable).with_name("plugin-runtime"))
    argv = [sys.executable, "-c", _APPLY, str(profile_path or null), exe, "run"]
    argv += [str(ROOT / "examples" / "minute_counter"), "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
    [probes] = [ln for ln in done.stderr.splitlines() if ln.startswith("PROBES ")]
    assert done.returncode == 0, done.stderr
    return json.loads(probes.removeprefix("PROBES ")), json.loads(done.stdout)


def test_the_profile_is_well_formed() -> None:
    p = profile()
    assert p["defaultAction"] in ACTIONS
    assert "SCMP_ARCH_X86_64" in p["architectures"] and "SCMP_ARCH_AARCH64" in p["architectures"]
    names: list[str] = []
    for rule in p["syscalls"]:
        assert rule["action"] in ACTIONS and set(rule) <= {"names", "action", "errnoRet"}
        names += rule["names"]
    assert len(names) == len(set(names)), "a call named twice"
    for name in names:  # every name is one libseccomp knows (on some architecture)
        pyseccomp.resolve_syscall(pyseccomp.Arch.X86_64, name)
    # What the layers themselves need is never denied: the fork server's namespaces and empty
    # root, the child's Landlock and seccomp.
    needed = {"unshare", "clone", "clone3", "mount", "umount2", "chroot", "prctl", "seccomp"}
    needed |= {"landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"}
    assert not needed & set(names)


def test_the_userns_deployment_uses_the_profile() -> None:
    [doc] = [d for d in yaml.safe_load_all(DEPLOYMENT.read_text()) if d]
    pod = doc["spec"]["template"]["spec"]["securityContext"]
    assert pod["seccompProfile"] == {"type": "Localhost", "localhostProfile": PROFILE.name}


def test_under_the_profile_a_run_keeps_every_layer_and_denied_calls_fail(tmp_path: Path) -> None:
    free_probes, free = run_under(None, tmp_path)
    probes, confined = run_under(PROFILE, tmp_path)
    # The probes can tell: without the profile none fails with EPERM, with it every one does.
    assert "EPERM" not in free_probes.values(), free_probes
    assert set(probes.values()) == {"EPERM"}, probes
    assert confined["outcome"] == "ok", confined
    assert confined["posture"] == free["posture"], confined["posture_reason"]
    assert confined["layers"] == free["layers"], confined["layer_reasons"]
    expected = os.environ.get("PLUGIN_RUNTIME_EXPECT_POSTURE")
    if expected:
        assert confined["posture"] == expected
    if os.geteuid() == 0:
        assert all(confined["layers"].values()), confined["layer_reasons"]
    assert errno.EPERM == 1 == profile()["syscalls"][0]["errnoRet"]
