"""`plugin-runtime run PLUGIN_DIR [TASK]`: run one task of a plugin directory, once, in the real
sandbox, with no database. For plugin authors and for debugging.

Exit status: 0 the run succeeded, 1 it ended in any other outcome (or the sandbox failed),
2 bad input (no such directory, bad plugin.json, unknown task, bad option or setting), with a
one-line reason on stderr. Secret setting values are never printed: they are masked as "***"
wherever they would appear (logs, result, error, fetch calls, storage).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from runtime.cli import main
from runtime.cli.db_cmds import (
    EXIT_BAD_INPUT,
    EXIT_ERROR,
    OneLineErrorCommand,
    cli_errors,
    fail,
    iso_utc,
    parse_assignments,
)
from runtime.jsonable import dumps
from runtime.schedule import slot_at_or_before
from runtime.store import StoreError, validate_settings
from runtime.text import Masker, markup_safe, secret_values
from sandbox import (
    DEFAULT_LIMITS,
    Limits,
    ManifestError,
    Plugin,
    RunInfo,
    RunReport,
    RunRequest,
    Sandbox,
    SandboxError,
    load_plugin,
    resolve_limits,
)
from sandbox.manifest import defined_functions, loads_bounded, read_plugin_dir
from sandbox.outcome import lowered_limits
from sandbox.services import IPNetwork, LocalServices, parse_networks

EXIT_OK = 0


class BadInput(Exception):
    """Input the user can fix: reported on one line, exit 2."""


# -- loading ------------------------------------------------------------------------------------


@dataclass
class Loaded:
    plugin: Plugin
    # Set when main.py does not even parse: the run still goes to the sandbox, which reports
    # it as a bad_plugin outcome (a run outcome, not bad input).
    unparseable: str | None = None


def load_for_run(directory: str) -> Loaded:
    """The plugin in `directory`. A malformed plugin.json raises BadInput; a main.py with a
    syntax error is loaded anyway (its run ends in bad_plugin)."""
    try:
        return Loaded(load_plugin(directory))
    except ManifestError as exc:
        first_error = exc
    # load_plugin also parses main.py; tell a syntax error (a bad_plugin outcome) apart from a
    # bad manifest (bad input).
    try:
        unparsed = read_plugin_dir(directory)
    except ManifestError:
        raise BadInput(f"invalid plugin: {first_error}") from None
    try:
        defined_functions(unparsed.source, unparsed.manifest.main)
    except ManifestError as exc:  # main.py does not parse: a bad_plugin run, not bad input
        return Loaded(unparsed, unparseable=str(exc))
    raise BadInput(f"invalid plugin: {first_error}")


def choose_task(loaded: Loaded, task: str | None) -> str:
    if loaded.unparseable is not None:
        return task or "run_every_minute"
    tasks = sorted(loaded.plugin.tasks())
    name = loaded.plugin.name
    if task is None:
        if len(tasks) == 1:
            return tasks[0]
        if not tasks:
            raise BadInput(f"plugin '{name}' has no scheduled function to run")
        raise BadInput(f"plugin '{name}' has several tasks; name one of: {', '.join(tasks)}")
    if task not in tasks:
        raise BadInput(
            f"plugin '{name}' has no task '{task}' (tasks: {', '.join(tasks) or 'none'})"
        )
    return task


# -- inputs -------------------------------------------------------------------------------------


def read_json_object(path: str, what: str, *, missing_ok: bool = False) -> dict[str, Any]:
    file = Path(path)
    if missing_ok and not file.exists():
        return {}
    try:
        data = loads_bounded(file.read_text(encoding="utf-8"), f"{what} {path}")
    except FileNotFoundError:
        raise BadInput(f"{what} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{what} {path}: cannot read: {exc}") from None
    except ValueError as exc:  # not JSON, or nested too deep
        raise BadInput(str(exc)) from None
    if not isinstance(data, dict):
        raise BadInput(f"{what} {path}: must be a JSON object")
    return data


def build_settings(plugin: Plugin, config_file: str | None, pairs: Sequence[str]) -> dict[str, Any]:
    """Settings from --config-file, overridden by --config KEY=VALUE, checked against the
    plugin's config_schema (messages never repeat a value)."""
    settings: dict[str, Any] = read_json_object(config_file, "config file") if config_file else {}
    try:
        settings.update(parse_assignments(pairs))
        return validate_settings(plugin.manifest, settings)
    except StoreError as exc:
        raise BadInput(str(exc)) from None


def build_limits(
    plugin: Plugin, timeout_s: float | None, cpu_s: float | None, memory_mb: int | None
) -> Limits:
    """Flags override the plugin's own limits; the operator caps (the defaults) still apply."""
    for flag, value in (("--timeout-s", timeout_s), ("--cpu-s", cpu_s), ("--memory-mb", memory_mb)):
        if value is not None and value <= 0:
            raise BadInput(f"{flag} must be greater than 0")
    return resolve_limits(asked_limits(plugin, timeout_s, cpu_s, memory_mb), caps=DEFAULT_LIMITS)


def asked_limits(
    plugin: Plugin, timeout_s: float | None, cpu_s: float | None, memory_mb: int | None
) -> Limits:
    """What the flags, else the plugin, ask for (before the caps)."""
    asked = plugin.manifest.limits
    return Limits(
        timeout_s=timeout_s if timeout_s is not None else asked.timeout_s,
        cpu_s=cpu_s if cpu_s is not None else asked.cpu_s,
        memory_mb=memory_mb if memory_mb is not None else asked.memory_mb,
    )


def nominal_slot(plugin: Plugin, task: str, now: datetime) -> str:
    """The task's latest slot at or before `now` (ISO UTC): what the scheduler would pass (in the
    plugin's declared time zone for a daily or cron task)."""
    try:
        scheduled = plugin.tasks().get(task)
    except ManifestError:  # main.py does not parse
        scheduled = None
    minute = now.astimezone(UTC).replace(second=0, microsecond=0)
    if scheduled is None:
        return iso_utc(minute)
    zone = plugin.manifest.time_zone if scheduled.cadence.zoned else None
    return iso_utc(slot_at_or_before(scheduled.cron, now.astimezone(UTC), zone))


def parse_slot(text: str) -> str:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"--slot: '{text}' is not an ISO 8601 time") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return iso_utc(value)


# -- the run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Jail:
    """What the sandbox of a run was: its layers, why some are off, and its posture."""

    layers: dict[str, bool]
    reasons: dict[str, str]
    posture: str
    posture_reason: str


def execute(
    request: RunRequest, allow_private: bool, allow_networks: Sequence[IPNetwork] = ()
) -> tuple[RunReport, Jail]:
    """Run the request in a fresh sandbox; the outcome, and the jail it ran in."""
    services = LocalServices(allow_private=allow_private, allow_networks=allow_networks)
    with Sandbox(services=services) as sandbox:
        outcome = sandbox.run(request)
        layers = dict(outcome.layers or sandbox.layers)
        return outcome, Jail(
            layers, dict(sandbox.layer_reasons), sandbox.posture, sandbox.posture_reason
        )


def write_storage(path: str, storage: Mapping[str, Any]) -> None:
    """Replace the storage file atomically."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".storage-", suffix=".json", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(storage, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def run_masker(plugin: Plugin, settings: Mapping[str, Any]) -> Masker:
    """Masks this run's secret setting values inside what the plugin produced."""
    schema = plugin.manifest.config_schema
    return Masker(secret_values({k: f.secret for k, f in schema.items()}, settings))


def report_json(
    plugin: Plugin,
    task: str,
    outcome: RunReport,
    storage: Mapping[str, Any],
    jail: Jail,
    limits: Limits,
    run: RunInfo,
    mask: Masker | None = None,
) -> dict[str, Any]:
    """The report. `mask` is applied to what the plugin produced (logs, error, result, storage,
    fetch calls), never to the report's own keys and text."""
    mask = mask or Masker(())
    error = outcome.error
    layers = jail.layers
    return {
        "plugin": plugin.name,
        "version": plugin.manifest.version,
        "task": task,
        "slot": run.slot,
        "backfilled": run.backfilled,
        "outcome": outcome.outcome,
        "duration_ms": outcome.duration_ms,
        "cpu_ms": outcome.cpu_ms,
        "max_rss_kb": outcome.max_rss_kb,
        "signal": outcome.signal,
        "logs": [
            {"level": line.level, "message": mask.text(line.message)} for line in outcome.logs
        ],
        "error": {
            "type": mask.text(error.type),
            "message": mask.text(error.message),
            "traceback": [mask.text(t) for t in error.traceback],
        }
        if error is not None
        else None,
        "result": mask(outcome.result),
        "storage": mask(dict(storage)),
        "storage_writes": mask(dict(outcome.storage_writes)) if outcome.ok else {},
        "storage_deletes": mask(list(outcome.storage_deletes)) if outcome.ok else [],
        "fetch_calls": mask(list(outcome.fetch_calls)),
        "limits": {
            "timeout_s": limits.timeout_s,
            "cpu_s": limits.cpu_s,
            "memory_mb": limits.memory_mb,
        },
        "layers": dict(layers),
        "layer_reasons": {k: v for k, v in jail.reasons.items() if not layers.get(k, False)},
        "posture": jail.posture,
        "posture_reason": jail.posture_reason,
    }


_LEVEL_STYLE = {"debug": "dim", "info": "cyan", "warning": "yellow", "error": "red"}


def _short(value: Any) -> str:
    text = dumps(value)
    return text if len(text) <= 200 else text[:197] + "..."


def report_text(data: Mapping[str, Any], before: Mapping[str, Any], console: Console) -> None:
    """The readable report: outcome, duration, logs, error, result, storage diff, layers."""
    ok = data["outcome"] == "ok"
    colour = "green" if ok else "red"
    console.print(
        f"[bold]{markup_safe(data['plugin'])}[/bold] {markup_safe(data['version'])} · "
        f"[bold]{markup_safe(data['task'])}[/bold] · slot {markup_safe(str(data['slot']))}"
        + (" (backfilled)" if data["backfilled"] else "")
    )
    limits = data["limits"]
    console.print(
        f"outcome [bold {colour}]{data['outcome']}[/bold {colour}] in {data['duration_ms']:.1f} ms"
        f" (cpu {data['cpu_ms']:.1f} ms, max rss {data['max_rss_kb'] // 1024} MiB; limits "
        f"{limits['timeout_s']:g} s wall, {limits['cpu_s']:g} s cpu, {limits['memory_mb']} MiB)"
    )
    if data["logs"]:
        console.print(f"[bold]logs[/bold] ({len(data['logs'])})")
        for line in data["logs"]:
            style = _LEVEL_STYLE.get(line["level"], "")
            console.print(
                f"  [{style}]{markup_safe(line['level']):<7}[/{style}] {markup_safe(line['message'])}"
                if style
                else f"  {markup_safe(line['level']):<7} {markup_safe(line['message'])}"
            )
    error = data["error"]
    if error is not None:
        console.print(
            f"[bold red]error[/bold red] {markup_safe(error['type'])}: {markup_safe(error['message'])}"
        )
        for tb_line, times in _collapse(error["traceback"]):
            repeat = f" [yellow](x{times})[/yellow]" if times > 1 else ""
            console.print(f"  [dim]{markup_safe(tb_line)}[/dim]{repeat}")
    if ok:
        console.print(f"[bold]result[/bold] {markup_safe(_short(data['result']))}")
    for call in data["fetch_calls"]:
        console.print(
            f"[bold]fetch[/bold] {markup_safe(str(call.get('method', 'GET')))} "
            f"{markup_safe(str(call.get('url', '')))}"
        )
    _storage_diff(before, data["storage"], ok, console)
    _layers(data["layers"], data["layer_reasons"], console)
    console.print(
        f"[bold]sandbox posture[/bold] {markup_safe(data['posture'])} ({markup_safe(data['posture_reason'])})"
    )


def _collapse(lines: Sequence[str]) -> list[tuple[str, int]]:
    """Consecutive repeats folded into (line, times): a RecursionError stays readable."""
    out: list[tuple[str, int]] = []
    for line in lines:
        if out and out[-1][0] == line:
            out[-1] = (line, out[-1][1] + 1)
        else:
            out.append((line, 1))
    return out


def _storage_diff(
    before: Mapping[str, Any], after: Mapping[str, Any], ok: bool, console: Console
) -> None:
    if not ok:
        console.print("[bold]storage[/bold] unchanged (writes of a failed run are dropped)")
        return
    changes = []
    for key in sorted(set(before) | set(after)):
        if key not in after:
            changes.append(f"  [red]- {markup_safe(key)}[/red]")
        elif key not in before:
            changes.append(
                f"  [green]+ {markup_safe(key)} = {markup_safe(_short(after[key]))}[/green]"
            )
        elif before[key] != after[key]:
            changes.append(
                f"  [yellow]~ {markup_safe(key)}: {markup_safe(_short(before[key]))} -> "
                f"{markup_safe(_short(after[key]))}[/yellow]"
            )
    if changes:
        console.print("[bold]storage[/bold]")
        for change in changes:
            console.print(change)
    else:
        console.print("[bold]storage[/bold] unchanged")


def _layers(layers: Mapping[str, bool], reasons: Mapping[str, str], console: Console) -> None:
    on = [name for name, active in layers.items() if active]
    off = [name for name, active in layers.items() if not active]
    console.print(
        f"[bold]sandbox layers[/bold] [green]on:[/green] {markup_safe(', '.join(on) or 'none')}"
    )
    for name in off:
        why = reasons.get(name, "unavailable on this host")
        console.print(f"  [yellow]off: {markup_safe(name)}[/yellow] ({markup_safe(why)})")


# -- the command --------------------------------------------------------------------------------


@main.command("run", cls=OneLineErrorCommand)
@click.argument("plugin_dir", metavar="PLUGIN_DIR")
@click.argument("task", required=False, metavar="[TASK]")
@click.option(
    "--config",
    "config_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A setting of the plugin's config_schema (repeatable).",
)
@click.option("--config-file", metavar="F.json", help="Settings as a JSON object (--config wins).")
@click.option(
    "--storage-file",
    metavar="F.json",
    help="Storage before the run; rewritten with the run's writes when it succeeds.",
)
@click.option("--timeout-s", type=float, help="Wall-time limit (capped by the operator's cap).")
@click.option("--cpu-s", type=float, help="CPU-time limit (capped).")
@click.option("--memory-mb", type=int, help="Address-space limit in MiB (capped).")
@click.option("--slot", metavar="ISO", help="meta.run.slot (default: the task's latest slot).")
@click.option("--backfilled", is_flag=True, help="Set meta.run.backfilled.")
@click.option(
    "--allow-private",
    is_flag=True,
    help="Let meta.fetch reach every loopback and private address (local testing).",
)
@click.option(
    "--allow-networks",
    metavar="CIDR,...",
    default="",
    help="Let meta.fetch reach only these non-public networks, as `serve --allow-networks` "
    "does (e.g. 10.20.0.0/16,127.0.0.1).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a report.")
@cli_errors
def run_command(
    plugin_dir: str,
    task: str | None,
    config_pairs: tuple[str, ...],
    config_file: str | None,
    storage_file: str | None,
    timeout_s: float | None,
    cpu_s: float | None,
    memory_mb: int | None,
    slot: str | None,
    backfilled: bool,
    allow_private: bool,
    allow_networks: str,
    as_json: bool,
) -> None:
    """Run TASK of the plugin in PLUGIN_DIR once, in the sandbox (TASK may be left out when the
    plugin has a single scheduled function). Exit 0 ok, 1 any other outcome, 2 bad input."""
    try:
        loaded = load_for_run(plugin_dir)
        plugin = loaded.plugin
        chosen = choose_task(loaded, task)
        settings = build_settings(plugin, config_file, config_pairs)
        limits = build_limits(plugin, timeout_s, cpu_s, memory_mb)
        lowered = lowered_limits(asked_limits(plugin, timeout_s, cpu_s, memory_mb))
        if lowered:
            click.echo(
                "note: limits above the operator's caps were lowered to the caps: "
                + ", ".join(f"{name} {asked:g} -> {cap:g}" for name, asked, cap in lowered),
                err=True,
            )
        try:
            networks = parse_networks(allow_networks)
        except ValueError as exc:
            raise BadInput(f"--allow-networks: {exc}") from None
        storage: dict[str, Any] = {}
        if storage_file:
            if not Path(storage_file).absolute().parent.is_dir():
                raise BadInput(f"storage file {storage_file}: its directory does not exist")
            storage = read_json_object(storage_file, "storage file", missing_ok=True)
        run = RunInfo(
            config_id=None,
            task=chosen,
            slot=parse_slot(slot) if slot else nominal_slot(plugin, chosen, datetime.now(UTC)),
            attempt=1,
            backfilled=backfilled,
        )
    except BadInput as exc:
        fail(str(exc), EXIT_BAD_INPUT)
        return
    request = RunRequest(
        plugin=plugin, task=chosen, config=settings, storage=storage, limits=limits, run=run
    )
    try:
        outcome, jail = execute(request, allow_private, networks)
    except (SandboxError, OSError) as exc:
        fail(f"the sandbox could not run the plugin: {exc}", EXIT_ERROR)
        return
    after = outcome.apply_to(storage)
    if storage_file and outcome.ok:
        try:
            write_storage(storage_file, after)
        except OSError as exc:
            fail(f"storage file {storage_file}: cannot write: {exc}", EXIT_ERROR)
    mask = run_masker(plugin, settings)
    data = report_json(plugin, chosen, outcome, after, jail, limits, run, mask)
    if as_json:
        click.echo(dumps(data))
    else:
        console = Console(highlight=False)
        if not console.is_terminal and "COLUMNS" not in os.environ:
            console.width = 200
        report_text(data, mask(storage), console)
    raise click.exceptions.Exit(EXIT_OK if outcome.ok else EXIT_ERROR)
