"""Red-team findings that are neither a layer-1 escape (test_escapes.py) nor a jail layer
(test_defence_in_depth.py): what the parent does with what a plugin sends, run for real from a
plugin directory (plugin.json + main.py) under the ordinary, restricted sandbox.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from sandbox import Outcome, RunRequest, Sandbox, load_plugin
from sandbox.manifest import Limits

REPO = Path(__file__).resolve().parents[2]
LIMITS = Limits(timeout_s=10.0, cpu_s=5.0, memory_mb=256)
# What a terminal acts on: C0 controls but tab and newline, DEL, C1 (ESC starts every sequence).
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Clear the screen, go up a line and print a forged line in green, an OSC 8 hyperlink, an OSC 52
# clipboard write, a C1 CSI.
ESCAPES = (
    "\x1b[2J\x1b[1A\x1b[32moutcome ok\x1b[0m"
    "\x1b]8;;https://evil.example/\x1b\\link\x1b]8;;\x1b\\"
    "\x1b]52;c;ZWNobyBwd25lZA==\x07\x9b2J\r"
)


def plugin_dir(directory: Path, source: str) -> Path:
    directory.mkdir()
    (directory / "plugin.json").write_text(
        json.dumps({"name": "painter", "version": "1.0.0", "main": "main.py"})
    )
    (directory / "main.py").write_text(source)
    return directory


def run(sb: Sandbox, directory: Path) -> Outcome:
    return sb.run(RunRequest(plugin=load_plugin(directory), task="run_every_minute", limits=LIMITS))


def text_of(outcome: Outcome) -> list[str]:
    error = outcome.error
    texts = [line.message for line in outcome.logs]
    if error is not None:
        texts += [error.type, error.message, *error.traceback]
    return texts


def test_a_plugin_cannot_send_terminal_escapes_in_text_for_people(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Log lines, error messages and traceback lines are printed on the operator's terminal (run,
    logs, runs show) and served by the status page: a plugin's ESC there cleared the screen and
    printed a forged "outcome ok" over the real one. Control characters become visible escapes."""
    escapes = json.dumps(ESCAPES)
    logged = plugin_dir(
        tmp_path / "logged",
        f"def run_every_minute(meta):\n"
        f"    meta.logger.info({escapes})\n"
        f"    meta.logger.warning('%s', {escapes})\n"
        f"    raise ValueError({escapes})  # {ESCAPES.replace(chr(13), '')}\n",
    )
    outcome = run(sandbox, logged)
    assert outcome.outcome == "error", outcome
    texts = text_of(outcome)
    assert len(outcome.logs) == 2 and any("outcome ok" in t for t in texts)
    assert [t for t in texts if CONTROL.search(t)] == []
    assert "\\x1b[2J\\x1b[1A" in outcome.logs[0].message  # shown, not acted on
    assert "line 4" in "\n".join(outcome.error.traceback if outcome.error else [])

    # A refused construct: the refusal quotes the plugin's line, escapes and all.
    refused = plugin_dir(
        tmp_path / "refused",
        f"def run_every_minute(meta):\n    return eval('1')  # {ESCAPES.replace(chr(13), '')}\n",
    )
    outcome = run(sandbox, refused)
    assert outcome.outcome == "bad_plugin", outcome
    assert outcome.error is not None and "eval" in outcome.error.message
    assert [t for t in text_of(outcome) if CONTROL.search(t)] == []


def test_the_run_report_prints_no_control_character_of_the_plugin(tmp_path: Path) -> None:
    """`plugin-runtime run`'s readable report: log lines and storage keys (data, kept as written)
    reach the terminal without a control character."""
    directory = plugin_dir(
        tmp_path / "painter",
        f"def run_every_minute(meta):\n"
        f"    meta.logger.info({json.dumps(ESCAPES)})\n"
        f"    meta.storage.set({json.dumps('key' + ESCAPES)}, 1)\n"
        f"    return 1\n",
    )
    env = {k: v for k, v in os.environ.items() if k != "PLUGIN_RUNTIME_DATABASE_URL"}
    # A terminal of its own would make rich colour its output; without one, any ESC is the plugin's.
    env.update(COLUMNS="200", TERM="dumb")
    env.pop("FORCE_COLOR", None)
    result = subprocess.run(
        [sys.executable, "-m", "runtime", "run", str(directory), "run_every_minute"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "outcome ok" in result.stdout and "key" in result.stdout
    assert CONTROL.findall(result.stdout) == [], result.stdout


# A child that asks for large cache values and never reads the answers.
HOG = """
import json, struct, time
def frame(meta, obj):
    body = json.dumps(obj).encode()
    meta._channel.sock.sendall(struct.pack(">I", len(body)) + body)
def run_every_minute(meta):
    meta.cache.set("big", "x" * 60000)
    for i in range(IN_FLIGHT):
        frame(meta, {"t": "call", "call": 100 + i, "op": "cache",
                     "args": {"action": "get", "key": "big"}})
    time.sleep(60)
"""
HONEST = """
import time
def run_every_minute(meta):
    started = time.monotonic()
    meta.cache.set("mine", 1)
    return time.monotonic() - started
"""


def test_a_child_that_does_not_read_its_replies_does_not_hold_other_configs_calls(
    tmp_path: Path,
) -> None:
    """Red team: each reply a child leaves unread past its socket buffer held a meta worker (a
    blocking send) until that run ended, so a few such runs of one plugin delayed every other
    config's cache calls by their whole wall time."""
    from sandbox import RunInfo, limits

    directory = plugin_dir(tmp_path / "hog", "def run_every_minute(meta):\n    return 1\n")
    plugin = load_plugin(directory)
    hog = HOG.replace("IN_FLIGHT", str(limits.MAX_CALLS_IN_FLIGHT_PER_RUN))
    with Sandbox(allow_unrestricted=True, meta_workers=2) as sb:
        hogs = [
            sb.submit(
                RunRequest(
                    plugin=plugin,
                    task="run_every_minute",
                    limits=Limits(timeout_s=6.0, cpu_s=5.0, memory_mb=256),
                    run=RunInfo(config_id=n),
                    unrestricted_source=hog,
                )
            )
            for n in (1, 2)
        ]
        time.sleep(1.5)  # their calls are in, their replies stuck
        honest = sb.run(
            RunRequest(
                plugin=plugin,
                task="run_every_minute",
                limits=LIMITS,
                run=RunInfo(config_id=99),
                unrestricted_source=HONEST,
            )
        )
        assert [h.result().outcome for h in hogs] == ["timeout", "timeout"]
    assert honest.outcome == "ok", honest
    assert isinstance(honest.result, float) and honest.result < 1.0, honest.result


def test_replies_left_unread_are_bounded(tmp_path: Path) -> None:
    """What the parent keeps for a child that does not read is bounded: a call while earlier
    replies wait to be sent ends the run (an honest child reads each reply before its next call),
    so a child cannot make the supervisor hold 10,000 unread replies."""
    from sandbox import limits

    directory = plugin_dir(tmp_path / "hoarder", "def run_every_minute(meta):\n    return 1\n")
    # 200 calls, each answered (60 kB) before the next is sent, none read.
    source = HOG.replace("range(IN_FLIGHT)", "range(200)").replace(
        '"args": {"action": "get", "key": "big"}})',
        '"args": {"action": "get", "key": "big"}})\n        time.sleep(0.01)',
    )
    with Sandbox(allow_unrestricted=True) as sb:
        outcome = sb.run(
            RunRequest(
                plugin=load_plugin(directory),
                task="run_every_minute",
                limits=Limits(timeout_s=8.0, cpu_s=5.0, memory_mb=256),
                unrestricted_source=source,
            )
        )
    assert limits.MAX_CALLS_IN_FLIGHT_PER_RUN < 200
    assert outcome.outcome == "crashed", outcome
    assert outcome.error is not None and "replies are unread" in outcome.error.message


def test_source_nested_too_deeply_is_refused_not_fatal(sandbox: Sandbox, tmp_path: Path) -> None:
    """Red team: a 20,000-term expression made the parser raise RecursionError, which escaped as
    a traceback from load_plugin and, in the fork server (which compiles the stored source of a
    plugin), out of its main loop: the fork server died with every run it held. Now it is a
    refusal naming the file, and the fork server goes on."""
    from sandbox import ManifestError, Plugin
    from sandbox.manifest import parse_manifest

    source = "def run_every_minute(meta):\n    return 1\nx = " + "+".join(["1"] * 20_000) + "\n"
    directory = plugin_dir(tmp_path / "deep", source)
    try:
        load_plugin(directory)
    except ManifestError as exc:
        assert "main.py" in str(exc)
    else:
        raise AssertionError("a source Python cannot parse was loaded")
    fork_server = sandbox.fork_server_pid
    stored = Plugin(
        manifest=parse_manifest({"name": "deep", "version": "1.0.0", "main": "main.py"}),
        source=source,
    )
    outcome = sandbox.run(RunRequest(plugin=stored, task="run_every_minute", limits=LIMITS))
    assert outcome.outcome == "bad_plugin", outcome
    assert outcome.error is not None and "nested too deeply" in outcome.error.message
    assert sandbox.fork_server_pid == fork_server
    honest = plugin_dir(tmp_path / "honest", "def run_every_minute(meta):\n    return 7\n")
    assert run(sandbox, honest).result == 7
    assert sandbox.fork_server_pid == fork_server


def test_limits_that_are_not_finite_are_refused_not_fatal(sandbox: Sandbox, tmp_path: Path) -> None:
    """Red team: `"timeout_s": NaN` in plugin.json (Python's JSON reads NaN and Infinity) passed
    the manifest's `> 0` check; `plugin-runtime run` then failed with "unexpected ValueError",
    and `Sandbox.submit` raised out of the caller (a node's dispatcher thread, which would end
    with it). Now the manifest names the field, and the sandbox answers a run with such limits
    with a `crashed` report and goes on serving the others."""
    from sandbox import ManifestError

    directory = plugin_dir(tmp_path / "nan", "def run_every_minute(meta):\n    return 1\n")
    for raw in ("NaN", "Infinity", "1e999", "-Infinity"):
        (directory / "plugin.json").write_text(
            '{"name": "nan", "version": "1.0.0", "main": "main.py", "limits": {"timeout_s": '
            + raw
            + "}}"
        )
        try:
            load_plugin(directory)
        except ManifestError as exc:
            assert "limits.timeout_s" in str(exc), exc
        else:
            raise AssertionError(f"a timeout of {raw} was accepted")
    (directory / "plugin.json").write_text(
        json.dumps({"name": "nan", "version": "1.0.0", "main": "main.py"})
    )
    plugin = load_plugin(directory)
    fork_server = sandbox.fork_server_pid
    for bad in (
        Limits(timeout_s=float("nan"), cpu_s=5.0, memory_mb=256),
        Limits(timeout_s=float("inf"), cpu_s=5.0, memory_mb=256),
        Limits(timeout_s=1e300, cpu_s=5.0, memory_mb=256),
        Limits(timeout_s=5.0, cpu_s=float("nan"), memory_mb=256),
        Limits(timeout_s=5.0, cpu_s=5.0, memory_mb=float("nan")),  # type: ignore[arg-type]
    ):
        outcome = sandbox.run(RunRequest(plugin=plugin, task="run_every_minute", limits=bad))
        assert outcome.outcome == "crashed", (bad, outcome)
        assert outcome.error is not None and "invalid limits" in outcome.error.message
    assert run(sandbox, directory).result == 1
    assert sandbox.fork_server_pid == fork_server


def test_a_plugin_slow_to_compile_delays_no_other_run(sandbox: Sandbox, tmp_path: Path) -> None:
    """Red team: RestrictedPython's transform costs about 1 ms a statement, and the fork server
    compiled a plugin's source in its own loop on its first run: a 1 MiB main file of
    `x = a.b.c.d[e].f(g.h)` lines held it 38 s, during which no run of any plugin started, no
    watchdog fired and no exit was reported. The compile now runs in a jailed child of its
    own; only that plugin's runs wait for it."""
    slow_source = "def run_every_minute(meta):\n    return 'compiled'\ndef unused():\n" + "".join(
        f"    x{i} = a.b.c.d[e].f(g.h)\n" for i in range(6000)
    )
    slow = load_plugin(plugin_dir(tmp_path / "slow", slow_source))
    fast = load_plugin(plugin_dir(tmp_path / "fast", "def run_every_minute(meta):\n    return 7\n"))
    assert sandbox.run(RunRequest(plugin=fast, task="run_every_minute", limits=LIMITS)).result == 7
    fork_server = sandbox.fork_server_pid
    compiling = sandbox.submit(RunRequest(plugin=slow, task="run_every_minute", limits=LIMITS))
    others = [
        sandbox.run(RunRequest(plugin=fast, task="run_every_minute", limits=LIMITS))
        for _ in range(3)
    ]
    assert not compiling.done(), "the slow plugin compiled before the others ran: too small"
    assert [outcome.result for outcome in others] == [7, 7, 7]
    outcome = compiling.result(timeout=120)
    assert outcome.outcome == "ok" and outcome.result == "compiled", outcome
    # Compiled once: the next run of it does not wait.
    again = sandbox.run(RunRequest(plugin=slow, task="run_every_minute", limits=LIMITS))
    assert again.result == "compiled"
    assert sandbox.fork_server_pid == fork_server


def test_a_run_waiting_for_its_compile_times_out(sandbox: Sandbox, tmp_path: Path) -> None:
    """A run's wall time counts from its arrival at the fork server, compile included."""
    slow_source = "def run_every_minute(meta):\n    return 'compiled'\ndef unused():\n" + "".join(
        f"    y{i} = a.b.c.d[e].f(g.h)\n" for i in range(6000)
    )
    slow = load_plugin(plugin_dir(tmp_path / "slow", slow_source))
    short = Limits(timeout_s=0.3, cpu_s=5.0, memory_mb=256)
    outcome = sandbox.run(RunRequest(plugin=slow, task="run_every_minute", limits=short))
    assert outcome.outcome == "timeout", outcome
    assert outcome.error is not None and "0.3 s" in outcome.error.message


def test_a_run_whose_descriptor_is_lost_fails_alone(tmp_path: Path) -> None:
    """Red team: the fork server pairs each "run" frame with the next descriptor received. When
    it has no descriptor left (EMFILE), the kernel drops the run's socket (MSG_CTRUNC) and the
    pairing broke: an IndexError ended the fork server and every run it held, and had another
    run's descriptor been queued by then, the run would have been handed *that* run's socket
    (its config and storage). Now a lost descriptor holds its place: that run fails, saying
    why, and the others go on."""
    import resource

    sleeper = load_plugin(
        plugin_dir(
            tmp_path / "sleeper",
            "import time\ndef run_every_minute(meta):\n    time.sleep(1.5)\n    return 'slept'\n",
        )
    )
    with Sandbox() as sb:
        # Warm: the plugin compiled (no compile child to account for), one run done.
        assert sb.run(RunRequest(plugin=sleeper, task="run_every_minute", limits=LIMITS)).ok
        server = sb.fork_server_pid
        assert server is not None
        # The descriptors it keeps open: a file the fork server opens for a moment (its orphan
        # sweep reads /proc every 0.5 s) must not count, or its slot is one more free below the
        # limit once it is closed.
        open_now = {int(fd) for fd in os.listdir(f"/proc/{server}/fd")}
        for _ in range(12):
            time.sleep(0.05)
            open_now &= {int(fd) for fd in os.listdir(f"/proc/{server}/fd")}
        free = [fd for fd in range(len(open_now) + 2) if fd not in open_now]
        _, hard = resource.prlimit(server, resource.RLIMIT_NOFILE)
        # Room for one more descriptor (the limit is on numbers): the first run's socket, then
        # its pidfd in its place.
        resource.prlimit(server, resource.RLIMIT_NOFILE, (free[1], hard))
        first = sb.submit(RunRequest(plugin=sleeper, task="run_every_minute", limits=LIMITS))
        time.sleep(0.5)
        second = sb.run(RunRequest(plugin=sleeper, task="run_every_minute", limits=LIMITS))
        assert second.outcome == "crashed", second
        assert second.error is not None and "descriptor" in second.error.message, second.error
        assert first.result(timeout=10).result == "slept"
        resource.prlimit(server, resource.RLIMIT_NOFILE, (hard, hard))
        again = sb.run(RunRequest(plugin=sleeper, task="run_every_minute", limits=LIMITS))
        assert again.result == "slept" and sb.fork_server_pid == server
