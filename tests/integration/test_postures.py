"""The sandbox posture on the surfaces: `serve --require-layers` refuses to start without a layer,
`serve`'s start-up line, `status`, `doctor` and `run --json` say the posture and why, and doctor
warns of each missing layer with what it exposes. The posture without namespaces is produced for
real with the refusal hook ($PLUGIN_RUNTIME_REFUSE_USERNS=1: the fork server is refused `unshare`,
as in a container with the default seccomp profile)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandbox.jail import REFUSE_USERNS_ENV, host_posture
from sandbox.layers import EXPOSES, POSTURES

if TYPE_CHECKING:
    from conftest import CliRunner

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "minute_counter"

REFUSED = {REFUSE_USERNS_ENV: "1"}


def test_serve_refuses_to_start_without_a_required_layer(cli_runner: CliRunner) -> None:
    """Namespaces refused: netns is gone in every posture (root in such a container too), so a
    node that requires it exits 2 naming it (and only it), before serving anything."""
    result = cli_runner("serve", "--require-layers", "seccomp,netns", env=REFUSED, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "required sandbox layer(s) missing: netns " in result.stderr
    assert "seccomp" not in result.stderr.split("missing:")[1].split("(")[0]
    assert "Operation not permitted" in result.stderr or "needs root" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_rejects_an_unknown_layer(cli_runner: CliRunner) -> None:
    result = cli_runner("serve", "--require-layers", "seccomp,bogus")
    assert result.returncode == 2
    assert "unknown sandbox layer 'bogus'" in result.stderr


def test_the_posture_is_on_the_start_up_line_in_status_and_doctor(
    cli_runner: CliRunner, database_url: str
) -> None:
    posture = host_posture()
    proc = subprocess.Popen(
        cli_runner.command(
            "serve", "--node-id", "postured", "--log-format", "text", "--require-layers", "seccomp"
        ),
        cwd=cli_runner.cwd,
        env=cli_runner.environment(),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if "sandbox posture" in line or not line:
                break
        assert f"sandbox posture {posture} (" in line, line
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = json.loads(cli_runner("status", "--json").stdout)
            if status["nodes"]:
                break
            time.sleep(0.2)
        [node] = status["nodes"]
        assert node["posture"] == posture and node["posture_reason"]
        assert set(node["layer_reasons"]) == set(node["layers_missing"])
        doctor = cli_runner("doctor")
        assert f"(posture {posture}: " in doctor.stdout or "3. sandbox layers: WARNING" in (
            doctor.stdout
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_doctor_warns_of_each_missing_layer_and_what_it_exposes(
    db: Any, cli_runner: CliRunner
) -> None:
    db.execute(
        "INSERT INTO plugin_runtime.nodes (id, hostname, pid, layers, posture, posture_reason, "
        "layer_reasons) VALUES ('in-a-container', 'host-b', 4343, %s, 'unprivileged', "
        "'not root, and the host refuses user namespaces', %s)",
        (
            json.dumps({"seccomp": True, "netns": False, "chroot": False}),
            json.dumps({"netns": "needs root or a user namespace", "chroot": "needs root"}),
        ),
    )
    doctor = cli_runner("doctor")
    assert doctor.returncode == 1, doctor.stdout
    out = " ".join(doctor.stdout.split())
    for layer in ("netns", "chroot"):
        assert (
            f"3. sandbox layers: WARNING sandbox layer {layer} is off on every node: "
            f"an escaped plugin can reach {' '.join(EXPOSES[layer].split())}"
        ) in out, out
    assert "unprivileged posture: needs root or a user namespace" in out
    status = json.loads(cli_runner("status", "--json").stdout)
    [node] = status["nodes"]
    assert node["posture"] == "unprivileged" and node["layers_missing"] == ["chroot", "netns"]


def test_run_json_names_the_posture(cli_runner: CliRunner) -> None:
    result = cli_runner("run", EXAMPLE, "--json", database_url=None)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["posture"] == host_posture() and data["posture"] in POSTURES
    assert data["posture_reason"]
    refused = json.loads(
        cli_runner(
            "run",
            EXAMPLE,
            "--json",
            database_url=None,
            env=REFUSED,
        ).stdout
    )
    assert refused["layers"]["netns"] is False and "netns" in refused["layer_reasons"]
    assert refused["posture"] == ("root" if data["posture"] == "root" else "unprivileged")


def test_every_layer_says_what_it_exposes() -> None:
    from sandbox.jail import host_layers

    assert set(host_layers()) == set(EXPOSES)
    assert all(EXPOSES.values())
