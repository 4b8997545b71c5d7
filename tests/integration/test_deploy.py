"""deploy/: every file parsed and checked — Kubernetes objects against the API's JSON schemas
(kubernetes-validate), the Dockerfile with Docker's own parser, the systemd unit with
`systemd-analyze verify` — and the unit's hardening measured: a run under its capability set,
no_new_privs and MDWE still gets every sandbox layer."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import click
import dockerfile
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from runtime.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
UNIT = DEPLOY / "systemd" / "plugin-runtime.service"
POSTURES = ("root", "userns", "unprivileged")  # as sandbox/layers.py and docs/deploy.md name them
KUBERNETES_VERSION = "1.32.0"  # appArmorProfile needs >= 1.30


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def deployment(posture: str) -> dict[str, Any]:
    [doc] = documents(K8S / f"deployment-{posture}.yaml")
    return doc


def container(posture: str) -> dict[str, Any]:
    [c] = deployment(posture)["spec"]["template"]["spec"]["containers"]
    return c


def configmap_toml() -> dict[str, Any]:
    [cm] = documents(K8S / "configmap.yaml")
    return tomllib.loads(cm["data"]["plugin-runtime.toml"])["serve"]


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


# --------------------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_every_manifest_is_valid_against_the_kubernetes_schema(path: Path) -> None:
    docs = documents(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_can_fail() -> None:
    bad = deployment("unprivileged")
    bad["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def test_the_configmap_is_a_config_file_serve_accepts(tmp_path: Path) -> None:
    [cm] = documents(K8S / "configmap.yaml")
    file = tmp_path / "plugin-runtime.toml"
    file.write_text(cm["data"]["plugin-runtime.toml"])
    result = CliRunner().invoke(
        main,
        ["serve", "--config-file", str(file), "--print-config"],
        env={"PLUGIN_RUNTIME_DATABASE_URL": None},
    )
    assert result.exit_code == 0, result.output
    assert "concurrency = 16" in result.output


@pytest.mark.parametrize("posture", POSTURES)
def test_deployment_probes_grace_period_and_config(posture: str) -> None:
    spec = deployment(posture)["spec"]["template"]["spec"]
    c = container(posture)
    port = int(configmap_toml()["http"].rsplit(":", 1)[1])
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": port}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # SIGTERM drains: the grace period must outlast the longest run (the wall-time cap) and a
    # flush, with room to spare.
    assert spec["terminationGracePeriodSeconds"] >= configmap_toml()["timeout-cap-s"] + 30
    assert c["args"][:3] == ["serve", "--config-file", "/etc/plugin-runtime/plugin-runtime.toml"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts["/etc/plugin-runtime"] == "config"
    env = {e["name"]: e for e in c["env"]}
    assert env["PLUGIN_RUNTIME_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == (
        "plugin-runtime-database"
    )
    # Every environment variable the manifest sets is one `serve` reads.
    serve = main.commands["serve"]
    known = {p.envvar for p in serve.params if isinstance(p, click.Option)}
    assert set(env) <= known


def test_deployments_differ_only_in_their_security_context() -> None:
    def strip(doc: dict[str, Any]) -> dict[str, Any]:
        doc = json.loads(json.dumps(doc))
        for labels in (doc["metadata"]["labels"], doc["spec"]["template"]["metadata"]["labels"]):
            labels.pop("plugin-runtime/posture")
        doc["spec"]["template"]["spec"].pop("securityContext")
        doc["spec"]["template"]["spec"]["containers"][0].pop("securityContext")
        return doc

    base = strip(deployment("unprivileged"))
    assert all(strip(deployment(p)) == base for p in POSTURES)


def test_pdb_selects_the_deployment_and_never_blocks_a_drain() -> None:
    [pdb] = documents(K8S / "pdb.yaml")
    for posture in POSTURES:
        d = deployment(posture)
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert d["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert 1 <= pdb["spec"]["maxUnavailable"] < d["spec"]["replicas"]
    [svc] = documents(K8S / "service.yaml")
    assert svc["spec"]["selector"].items() <= labels.items()


def test_security_context_of_each_posture() -> None:
    root, userns, unprivileged = (container(p)["securityContext"] for p in POSTURES)
    pod = {p: deployment(p)["spec"]["template"]["spec"]["securityContext"] for p in POSTURES}
    # root: exactly the capabilities the layers use (the same set as the systemd unit's).
    caps = {"CAP_" + c for c in root["capabilities"]["add"]}
    assert caps == set(unit_settings()["CapabilityBoundingSet"][0].split())
    assert root["capabilities"]["drop"] == ["ALL"] and pod["root"]["runAsUser"] == 0
    # userns: non-root, and the runtime's default profiles (which refuse user namespaces) off.
    assert pod["userns"]["runAsNonRoot"]
    assert pod["userns"]["seccompProfile"]["type"] in ("Unconfined", "Localhost")
    assert pod["userns"]["appArmorProfile"]["type"] == "Unconfined"
    # unprivileged: what the Pod Security "restricted" standard demands.
    assert pod["unprivileged"]["runAsNonRoot"] is True
    assert pod["unprivileged"]["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
    for sc in (userns, unprivileged):
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
    assert all(container(p)["securityContext"]["readOnlyRootFilesystem"] for p in POSTURES)


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_parses_and_matches_the_manifests() -> None:
    commands = dockerfile.parse_file(str(DEPLOY / "Dockerfile"))
    by_cmd: dict[str, list[Any]] = {}
    for c in commands:
        by_cmd.setdefault(c.cmd.upper(), []).append(c)
    assert len(by_cmd["FROM"]) == 2  # build stage, then a runtime stage without the build tools
    assert by_cmd["ENTRYPOINT"][-1].value == ("plugin-runtime",)
    assert by_cmd["CMD"][-1].value == ("serve",)
    installed = " ".join(r.value[0] for r in by_cmd["RUN"])
    assert "libseccomp2" in installed and "tzdata" in installed
    # The image's uid is the one the non-root manifests run as; its port the one they probe.
    [user] = by_cmd["USER"]
    for posture in ("userns", "unprivileged"):
        assert deployment(posture)["spec"]["template"]["spec"]["securityContext"][
            "runAsUser"
        ] == int(user.value[0])
    assert by_cmd["EXPOSE"][-1].value == (
        str(container("unprivileged")["ports"][0]["containerPort"]),
    )
    env = dict(zip(by_cmd["ENV"][0].value[::2], by_cmd["ENV"][0].value[1::2], strict=True))
    assert env["PLUGIN_RUNTIME_HTTP"].endswith(":9100")
    assert by_cmd["STOPSIGNAL"][0].value == ("SIGTERM",)


# --------------------------------------------------------------------------- systemd


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is installed with systemd (CI installs it)"
    # verify checks ExecStart's binary exists: point it at this checkout's command.
    exe = Path(sys.executable).with_name("plugin-runtime")
    unit = tmp_path / "plugin-runtime.service"
    unit.write_text(UNIT.read_text().replace("/opt/plugin-runtime/bin/plugin-runtime", str(exe)))
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
    # ... and it can fail.
    unit.write_text(unit.read_text().replace("KillMode=mixed", "KillMode=sometimes"))
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert "kill mode" in done.stderr


def test_systemd_unit_keeps_the_options_that_would_break_a_layer_out() -> None:
    settings = unit_settings()
    for breaks_a_layer in (
        "PrivateUsers",
        "RestrictNamespaces",
        "SystemCallFilter",
        "PrivateNetwork",
    ):
        assert breaks_a_layer not in settings
    assert settings["NoNewPrivileges"] == ["yes"] and settings["KillMode"] == ["mixed"]
    assert int(settings["TimeoutStopSec"][0]) >= configmap_toml()["timeout-cap-s"] + 30


def _run_under(caps: str, plugin: str, *extra: str) -> dict[str, Any]:
    """`plugin-runtime run --json` with only `caps` in the bounding set, no_new_privs and MDWE
    (MemoryDenyWriteExecute), as the unit would start it."""
    exe = str(Path(sys.executable).with_name("plugin-runtime"))
    mdwe = (
        "import ctypes, os, sys; ctypes.CDLL(None).prctl(65, 1, 0, 0, 0); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    argv = ["setpriv", f"--bounding-set=-all,{caps}", "--no-new-privs", sys.executable, "-c", mdwe]
    argv += [exe, "run", str(ROOT / plugin), "--json", *extra]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
    return json.loads(done.stdout)


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="the unit's root posture is measured as root with setpriv (CI runs as root)",
)


@needs_root
def test_the_units_capabilities_give_every_layer_and_kill_timed_out_runs() -> None:
    assert ctypes.CDLL(None).prctl(66, 0, 0, 0, 0) >= 0, "PR_GET_MDWE (Linux >= 6.3)"
    caps = ",".join(
        "+" + c.removeprefix("CAP_").lower()
        for c in unit_settings()["CapabilityBoundingSet"][0].split()
    )
    ok = _run_under(caps, "examples/minute_counter")
    assert ok["outcome"] == "ok"
    assert all(ok["layers"].values()), ok["layer_reasons"]
    hung = _run_under(caps, "tests/plugins/always_timeout", "--timeout-s", "1")
    assert hung["outcome"] == "timeout"
    # Without SYS_ADMIN there is no network namespace: the set is not larger than needed.
    fewer = _run_under(caps.replace(",+sys_admin", ""), "examples/minute_counter")
    assert fewer["layers"]["netns"] is False
