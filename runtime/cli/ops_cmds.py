"""Operating commands: `status`, `doctor`, `logs`, `prune`.

`status` and `doctor` exit 0 when healthy, 1 when something is wrong, 3 when the database cannot
be reached (they still print a report), so either can serve as a probe.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import click

from runtime import retention, store
from runtime.cli import main
from runtime.cli.db_cmds import (
    EXIT_BAD_INPUT,
    EXIT_DB_UNAVAILABLE,
    EXIT_ERROR,
    OneLineErrorCommand,
    _console,
    cli_errors,
    database_url_option,
    fail,
    iso_utc,
    open_database,
    print_json,
    print_table,
)
from runtime.cli.options import Setting, limit_option, settings_options
from runtime.db import DatabaseUnavailable, InvalidDatabaseUrl, resolve_database_url
from runtime.node.settings import DEAD_AFTER_S
from runtime.queries import query
from runtime.run_error import error_summary
from runtime.status import (
    CHECKS,
    STOPPED_SHOWN_S,
    Problem,
    Thresholds,
    status_for_url,
    unreachable_status,
)
from runtime.text import Masker, markup_safe, visible

STYLE = {"critical": "bold red", "warning": "yellow", "notice": "cyan"}

dead_after_option = click.option(
    "--dead-after",
    type=float,
    default=DEAD_AFTER_S,
    show_default=True,
    metavar="S",
    help="Real seconds without a heartbeat after which a node is dead (as `serve --dead-after`).",
)


def _snapshot(database_url: str | None, dead_after_s: float = DEAD_AFTER_S) -> dict[str, Any]:
    try:
        url = resolve_database_url(database_url)
    except InvalidDatabaseUrl as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    except DatabaseUnavailable as exc:  # the embedded server cannot start
        status = unreachable_status(database_url or "", str(exc), exc.failure, exc.next_step)
        status["problems"] = [
            Problem(
                "database", "critical", str(exc), exc.next_step or "plugin-runtime db stop"
            ).to_dict()
        ]
        status["healthy"] = False
        return status
    return status_for_url(url, thresholds=Thresholds(dead_after_s=dead_after_s))


def _exit_code(status: Mapping[str, Any]) -> int:
    if not status["database"].get("reachable"):
        return EXIT_DB_UNAVAILABLE
    return 0 if status["healthy"] else EXIT_ERROR


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _when(value: Any) -> str:
    return iso_utc(value.replace(microsecond=0)) if isinstance(value, datetime) else "-"


# -- status -------------------------------------------------------------------------------------


@main.command("status", cls=OneLineErrorCommand)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@dead_after_option
@database_url_option
def status_cmd(as_json: bool, dead_after: float, database_url: str | None) -> None:
    """The fleet at a glance: database, queue, lag per cadence, nodes, worst configs,
    quarantined configs, problems. Exit 0 healthy, 1 a problem, 3 database unreachable."""
    status = _snapshot(database_url, dead_after)
    if as_json:
        print_json(status)
    else:
        _print_status(status)
    raise click.exceptions.Exit(_exit_code(status))


def _print_status(status: Mapping[str, Any]) -> None:
    console = _console()
    db = status["database"]
    if not db.get("reachable") or not db.get("schema", True):
        console.print(
            f"[bold red]{markup_safe(str(db.get('headline') or 'DATABASE UNREACHABLE'))}[/] at "
            f"{markup_safe(str(db.get('location')))}: {markup_safe(str(db.get('error')))}"
        )
        console.print("Nodes, lag and configs cannot be shown without the database.")
    else:
        console.print(
            f"[bold]database[/] {markup_safe(str(db['location']))} reachable, round trip "
            f"{db['rtt_ms']:.1f} ms (connect {db.get('connect_ms', 0):.0f} ms), connections "
            f"{db['connections']}/{db['max_connections']}, active {db['active']}, lock waits "
            f"{db['lock_waits']}, longest statement {db['longest_query_s']:.0f} s"
        )
        q = status["queue"]
        oldest = (
            f", oldest due run {q['oldest_run_id']} due {_when(q['oldest_due_at'])}"
            if q.get("oldest_run_id")
            else ""
        )
        console.print(
            f"[bold]queue[/] {q['claimed']} claimed by nodes (held or running), "
            f"{q['queued']} manual run(s) queued{oldest}"
        )
        _print_tables(status)
        clock = status.get("clock") or {}
        if clock.get("source") not in (None, "database") and clock.get("scale") != 1.0:
            console.print(
                f"[dim]windows follow the scheduler clock of {markup_safe(str(clock['source']))} "
                f"(x{clock['scale']:g}, now {_when(clock['now'])})[/]"
            )
    _print_problems(status["problems"])


def _table(
    title: str, columns: Sequence[tuple[str, str]], rows: Sequence[Mapping[str, Any]]
) -> None:
    if rows:
        print_table(title, columns, rows)
    else:
        _console().print(f"[bold]{markup_safe(title)}[/]: none")


def _print_tables(status: Mapping[str, Any]) -> None:
    minutes = status["window_s"] / 60
    cadences = [
        {
            **c,
            "runs_per_min": _num(c["runs_per_min"]),
            "lag_p50_s": _num(c["lag_p50_s"]),
            "lag_p99_s": _num(c["lag_p99_s"]),
            "oldest": _when(c["oldest_unstarted_slot"]) if c["overdue"] else "-",
        }
        for c in status["cadences"]
    ]
    _table(
        f"lag per cadence (start lag in s, last {minutes:.0f} min)",
        [
            ("cadence", "cadence"),
            ("tasks", "tasks"),
            ("runs/min", "runs_per_min"),
            ("lag p50", "lag_p50_s"),
            ("lag p99", "lag_p99_s"),
            ("overdue", "overdue"),
            ("oldest unstarted slot", "oldest"),
            ("missed 24h", "missed_24h"),
        ],
        cadences,
    )
    nodes = [
        {
            **n,
            "heartbeat": f"{n['heartbeat_age_s']:.0f} s ago",
            "load": f"{n['running']}/{n['concurrency']} running, {n['held']} held",
            "runs_per_min": _num(n["runs_per_min"]),
            "lag_p99_s": _num(n["lag_p99_s"], 2),
            "missing": ", ".join(n["layers_missing"]) or "none",
            "active": str(len(n["layers_active"])),
            "posture": n.get("posture") or "?",
        }
        for n in status["nodes"]
    ]
    _table(
        "nodes",
        [
            ("node", "id"),
            ("state", "state"),
            ("heartbeat", "heartbeat"),
            ("load", "load"),
            ("runs/min", "runs_per_min"),
            ("lag p99 s", "lag_p99_s"),
            ("sandbox posture", "posture"),
            ("layers on", "active"),
            ("layers missing", "missing"),
        ],
        nodes,
    )
    if status.get("stopped_nodes_hidden"):
        _console().print(
            f"[dim]{status['stopped_nodes_hidden']} node(s) stopped more than "
            f"{STOPPED_SHOWN_S / 60:.0f} min ago not shown[/]"
        )
    worst = [
        {
            **w,
            "p95_ms": _num(w["p95_ms"], 0),
            "status": "quarantined"
            if w["quarantined_at"]
            else ("enabled" if w["enabled"] else "disabled"),
        }
        for w in status["worst_configs"]
    ]
    _table(
        "worst configs (last hour)",
        [
            ("config", "config_id"),
            ("plugin", "plugin"),
            ("runs", "runs"),
            ("failures", "failures"),
            ("timeouts", "timeouts"),
            ("p95 ms", "p95_ms"),
            ("last outcome", "last_outcome"),
            ("status", "status"),
        ],
        worst,
    )
    quarantined = [{**q, "since": _when(q["quarantined_at"])} for q in status["quarantined"]]
    _table(
        "quarantined configs",
        [
            ("config", "config_id"),
            ("plugin", "plugin"),
            ("since", "since"),
            ("reason", "quarantine_reason"),
        ],
        quarantined,
    )


def _print_problems(found: Sequence[Mapping[str, str]]) -> None:
    console = _console()
    serious = [p for p in found if p["severity"] != "notice"]
    if not serious:
        console.print("[bold green]healthy[/]: no problems")
    for p in found:
        console.print(
            f"[{STYLE[p['severity']]}]{p['severity'].upper()}[/] "
            f"{markup_safe('[' + p['check'] + ']')} {markup_safe(p['what'])}"
        )
        _print_commands(p)
    if serious:
        console.print(f"[bold red]{len(serious)} problem(s)[/]")


def _print_commands(p: Mapping[str, str]) -> None:
    """The command that shows why (`look`), the one that acts (`run`), and the hint."""
    console = _console()
    if p.get("look"):
        console.print(f"    look: {markup_safe(p['look'])}", soft_wrap=True)
    console.print(f"    run: {markup_safe(p['command'])}", soft_wrap=True)
    if p.get("hint"):
        console.print(f"    ({markup_safe(p['hint'])})", soft_wrap=True)


# -- doctor -------------------------------------------------------------------------------------


@main.command("doctor", cls=OneLineErrorCommand)
@dead_after_option
@database_url_option
def doctor_cmd(dead_after: float, database_url: str | None) -> None:
    """Walk the runbook's checks in order: database, nodes, sandbox layers, lag per cadence,
    missed slots, failing and quarantined configs. Each says OK, or what is wrong and the exact
    command that acts on it. Exit 0 all OK, 1 a problem, 3 database unreachable."""
    status = _snapshot(database_url, dead_after)
    console = _console()
    reachable = bool(status["database"].get("reachable"))
    by_check: dict[str, list[Mapping[str, str]]] = {}
    for p in status["problems"]:
        by_check.setdefault(p["check"], []).append(p)
    for number, (name, label) in enumerate(CHECKS, start=1):
        head = f"{number}. {label}"
        found = by_check.get(name, [])
        if not reachable and name != "database":
            console.print(f"{head}: [dim]SKIPPED[/] (needs the database)")
            continue
        serious = [p for p in found if p["severity"] != "notice"]
        if not serious:
            console.print(f"{head}: [bold green]OK[/]{_ok_detail(name, status)}")
        for p in found:
            console.print(
                f"{head}: [{STYLE[p['severity']]}]{p['severity'].upper()}[/] {markup_safe(p['what'])}"
            )
            _print_commands(p)
    code = _exit_code(status)
    console.print(
        "all checks OK"
        if code == 0
        else f"[bold red]{sum(1 for p in status['problems'] if p['severity'] != 'notice')} "
        "problem(s)[/]"
    )
    raise click.exceptions.Exit(code)


def _ok_detail(check: str, status: Mapping[str, Any]) -> str:
    db = status["database"]
    if check == "database":
        return f" (round trip {db['rtt_ms']:.1f} ms, {db['connections']} connections)"
    if check == "nodes":
        alive = sum(1 for n in status["nodes"] if n["state"] == "alive")
        return f" ({alive} node(s) alive)"
    if check == "lag":
        parts = [f"{c['cadence']} p99 {_num(c['lag_p99_s'])} s" for c in status["cadences"]]
        return f" ({', '.join(parts)})" if parts else " (no tasks)"
    if check == "configs":
        return f" ({len(status['worst_configs'])} config(s) ran in the last hour)"
    if check == "sandbox":
        postures = sorted(
            {
                f"{n.get('posture') or '?'}: {n.get('posture_reason') or '-'}"
                for n in status["nodes"]
                if n["state"] == "alive"
            }
        )
        return f" (posture {'; '.join(postures)})" if postures else ""
    return ""


# -- logs ---------------------------------------------------------------------------------------


def _print_lines(rows: Sequence[Mapping[str, Any]], mask: Masker) -> None:
    """One line per log line: the message with the config's secrets masked and control
    characters escaped (a plugin's text cannot drive the terminal or forge a line)."""
    for row in rows:
        if row.get("error") is not None:  # the error that ended a failed run
            message = (
                f"{row['outcome']}: {error_summary(row['error'], 10_000)} "
                f"(plugin-runtime runs show {row['run_id']})"
            )
        else:
            message = str(row["message"])
        click.echo(
            f"{_when(row['ts'])}  run {row['run_id']}  {visible(row['task'] or '-')}  "
            f"{visible(str(row['level']).upper()):<7} {visible(mask.text(message))}"
        )


def _with_errors(
    lines: Sequence[Mapping[str, Any]], errors: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Log lines and run errors in one stream: each run's lines, then its error."""
    merged = [{**line, "error": None} for line in lines]
    merged += [{**e, "id": None, "level": "error", "message": ""} for e in errors]
    merged.sort(key=lambda r: (r["run_id"], r["id"] is None, r["id"] or 0))
    return merged


@main.command("logs", cls=OneLineErrorCommand)
@click.argument("config_id", metavar="ID", type=int)
@click.option("--run", "run_id", type=int, metavar="RUN", help="Only lines of this run.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@limit_option(100, "How many of the latest lines to print first.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between polls with --follow.",
)
@database_url_option
@cli_errors
def logs_cmd(
    config_id: int,
    run_id: int | None,
    follow: bool,
    limit: int,
    interval: float,
    database_url: str | None,
) -> None:
    """Log lines of plugin config ID (print and meta.logger), oldest first; each failed run's
    lines end with its error (`runs show RUN` has the traceback)."""
    with open_database(database_url) as conn:
        if run_id is not None:
            run = conn.execute(query("run_of_config"), {"run_id": run_id}).fetchone()
            if run is None or run["config_id"] != config_id:
                raise store.NotFound(f"config {config_id} has no run {run_id}")
        params: dict[str, Any] = {"config_id": config_id, "run_id": run_id, "limit": limit}
        lines = list(reversed(conn.execute(query("logs_tail"), params).fetchall()))
        # The errors of the runs these lines cover, and of later runs (some fail silently).
        from_run = min((line["run_id"] for line in lines), default=0)
        errors = conn.execute(
            query("failed_runs_of_config"), {**params, "from_run_id": from_run}
        ).fetchall()
        rows = _with_errors(lines, errors)[-limit:]
        if not rows and conn.execute(query("config_exists"), {"id": config_id}).fetchone() is None:
            raise store.NotFound(f"no config with id {config_id}")
        # Lines are masked when recorded; masking again here covers lines recorded before
        # that, and secrets changed since.
        mask = Masker(store.config_secrets(conn, [config_id]).get(config_id, []))
        _print_lines(rows, mask)
        if not rows:
            click.echo(
                f"config {config_id} has no log lines and no failed run "
                f"(its runs: plugin-runtime runs --config {config_id})",
                err=True,
            )
        if not follow:
            return
        last = lines[-1]["id"] if lines else 0
        shown = {
            e["run_id"]
            for e in conn.execute(
                query("failed_runs_of_config"), {**params, "from_run_id": 0, "limit": 1000}
            ).fetchall()
        }
        try:
            while True:
                time.sleep(interval)
                new = conn.execute(
                    query("logs_after"), {**params, "after_id": last, "limit": 1000}
                ).fetchall()
                failed = [
                    e
                    for e in conn.execute(
                        query("failed_runs_of_config"), {**params, "from_run_id": 0, "limit": 100}
                    ).fetchall()
                    if e["run_id"] not in shown
                ]
                shown.update(e["run_id"] for e in failed)
                _print_lines(_with_errors(new, failed), mask)
                if new:
                    last = new[-1]["id"]
        except KeyboardInterrupt:
            return


# -- prune --------------------------------------------------------------------------------------


@main.command("prune", cls=OneLineErrorCommand)
@settings_options(
    (
        Setting(
            "--runs-days",
            "runs_days",
            click.FloatRange(min=0),
            "Delete runs finished more than this many days ago.",
        ),
        Setting(
            "--logs-days",
            "logs_days",
            click.FloatRange(min=0),
            "Delete log lines older than this many days.",
        ),
        Setting(
            "--batch",
            "batch",
            click.IntRange(min=1),
            "Rows per statement (each statement is short).",
        ),
    ),
    SimpleNamespace(
        runs_days=retention.DEFAULT_RUNS_DAYS,
        logs_days=retention.DEFAULT_LOGS_DAYS,
        batch=retention.DEFAULT_BATCH,
    ),
)
@database_url_option
@cli_errors
def prune_cmd(runs_days: float, logs_days: float, batch: int, database_url: str | None) -> None:
    """Retention: delete old runs and log lines in short batches (safe while nodes run)."""
    with open_database(database_url) as conn:
        result = retention.prune(conn, runs_days, logs_days, batch, pause_s=0.05)
    click.echo(
        f"deleted {result['runs']} run(s) older than {runs_days:g} day(s) and "
        f"{result['logs']} log line(s) older than {logs_days:g} day(s) in "
        f"{result['statements']} statement(s), {result['seconds']:.1f} s"
    )
