"""Admin commands: `db migrate`, `plugins ...`, `configs ...`, `trigger`, `runs`.

Every command takes `--database-url` (default: $PLUGIN_RUNTIME_DATABASE_URL, else the embedded
server in $PLUGIN_RUNTIME_DATA_DIR or the user's data directory) and brings the schema up to date first. Errors are one line on stderr:
exit 2 for bad input, 3 when the database cannot be reached, 1 for anything else.

`database_url_option`, `open_database` and `cli_errors` are meant for other command modules too.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import click
import psycopg
from click.core import ParameterSource
from rich.console import Console
from rich.table import Table
from rich.text import Text

from runtime import store
from runtime.cli import DATABASE_URL_META, main
from runtime.cli.options import limit_option
from runtime.db import (
    ENV_DATA_DIR,
    ENV_DATABASE_URL,
    DatabaseUnavailable,
    InvalidDatabaseUrl,
    connect,
    data_dir,
    default_data_dir,
    failure_reason,
    resolve_database_url,
    stop_embedded,
)
from runtime.jsonable import dumps, iso_utc
from runtime.migrate import MigrationError, migrate
from runtime.run_error import error_summary
from runtime.text import Masker, markup_safe, visible
from sandbox import DEFAULT_LIMITS, Limits
from sandbox.manifest import CADENCE_FUNCTIONS, ManifestError, Plugin, load_plugin, near_misses
from sandbox.outcome import lowered_limits

P = ParamSpec("P")
R = TypeVar("R")

EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_DB_UNAVAILABLE = 3


# -- shared plumbing ----------------------------------------------------------------------------


class _OneLineErrors:
    """Bad arguments are reported on one line (exit 2), not as a usage block."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)  # type: ignore[misc]
        except click.UsageError as exc:
            name = " ".join(filter(None, [parent.command_path if parent else None, info_name]))
            click.echo(visible(f"error: {exc.format_message()} (see '{name} --help')"), err=True)
            raise click.exceptions.Exit(EXIT_BAD_INPUT) from None


class OneLineErrorCommand(_OneLineErrors, click.Command):
    """A command whose bad arguments are reported on one line (exit 2), not as a usage block."""


class OneLineErrorGroup(_OneLineErrors, click.Group):
    """A group whose bad arguments are reported on one line (exit 2), not as a usage block."""


DATABASE_URL_HELP = (
    f"PostgreSQL URL (default: ${ENV_DATABASE_URL}, else the embedded server in "
    f"${ENV_DATA_DIR}, by default {default_data_dir()})."
)


def _inherit_database_url(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """`--database-url` given here wins; else the one given before the command
    (`plugin-runtime --database-url URL status`, or `runs --database-url URL show 5`); else a value
    from the environment or a config file (`serve`), where a flag before the command still wins."""
    before = ctx.meta.get(DATABASE_URL_META)
    given_here = param.name is not None and (
        ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE
    )
    if value and (given_here or not before):
        ctx.meta[DATABASE_URL_META] = value
        return value
    return before or value


def database_url_option(fn: Callable[P, R]) -> Callable[P, R]:
    """Adds `--database-url URL` (passed to the command as `database_url`)."""
    return click.option(
        "--database-url",
        "database_url",
        metavar="URL",
        default=None,
        callback=_inherit_database_url,
        help=DATABASE_URL_HELP,
    )(fn)


@contextmanager
def open_database(database_url: str | None, *, run_migrations: bool = True) -> Iterator[store.Conn]:
    """An autocommit connection to the resolved database, migrated first unless told not to."""
    conn = connect(resolve_database_url(database_url))
    try:
        if run_migrations:
            migrate(conn)
        yield conn
    finally:
        conn.close()


def fail(message: str, code: int) -> None:
    """Print `error: message` (one line, control characters escaped: a message may quote a
    plugin's text) on stderr and exit with `code`."""
    one_line = visible(" ".join(message.split()))
    click.echo(f"error: {one_line}", err=True)
    raise click.exceptions.Exit(code)


def cli_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turns the errors an operator can meet into one line on stderr and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ManifestError as exc:
            fail(f"invalid plugin: {exc}", EXIT_BAD_INPUT)
        except (store.StoreError, InvalidDatabaseUrl) as exc:
            fail(str(exc), EXIT_BAD_INPUT)
        except DatabaseUnavailable as exc:
            step = f" (next: {exc.next_step})" if exc.next_step else ""
            fail(f"{exc}{step}", EXIT_DB_UNAVAILABLE)
        except psycopg.OperationalError as exc:
            fail(f"lost the connection to PostgreSQL: {failure_reason(exc)}", EXIT_DB_UNAVAILABLE)
        except MigrationError as exc:
            fail(str(exc), EXIT_ERROR)
        except psycopg.Error as exc:
            fail(f"database error: {failure_reason(exc)}", EXIT_ERROR)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # a bug: still one line, never a traceback
            fail(f"unexpected {type(exc).__name__}: {exc}", EXIT_ERROR)
        raise AssertionError("unreachable")  # fail() always raises

    return wrapper


def parse_assignments(pairs: Sequence[str]) -> dict[str, str]:
    """["KEY=VALUE", ...] -> {KEY: VALUE}. Messages never repeat a value (it may be a secret)."""
    result: dict[str, str] = {}
    for position, pair in enumerate(pairs, start=1):
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise store.ConfigError(f"setting #{position}: expected KEY=VALUE")
        if key in result:
            raise store.ConfigError(f"setting '{key}' is given twice", key)
        result[key] = value
    return result


def print_json(rows: Any) -> None:
    """Valid JSON whatever the rows hold (no NaN or Infinity; see runtime.jsonable)."""
    click.echo(dumps(rows, indent=2))


def echo(message: str, *, err: bool = False) -> None:
    """One line of the command's own text around values that may be a plugin's: control
    characters escaped."""
    click.echo(visible(message), err=err)


def _console() -> Console:
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 200
    return console


def _cell(value: Any) -> Text:
    """A table cell: plain text (rich markup is not interpreted), control characters escaped."""
    if value is None:
        return Text("")
    if isinstance(value, datetime):
        return Text(iso_utc(value.replace(microsecond=0)))
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, dict | list):
        return Text(visible(dumps(value).replace(", ", ",").replace(": ", ":")))
    return Text(visible(value))


def print_table(
    title: str, columns: Sequence[tuple[str, str]], rows: Sequence[Mapping[str, Any]]
) -> None:
    """A rich table of `rows`; `columns` are (header, key) pairs."""
    table = Table(title=Text(visible(title)), title_justify="left")
    for header, _key in columns:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(key)) for _header, key in columns))
    _console().print(table)


# -- db -----------------------------------------------------------------------------------------


@main.group("db")
def db_group() -> None:
    """The database schema."""


@db_group.command("migrate", cls=OneLineErrorCommand)
@database_url_option
@cli_errors
def db_migrate(database_url: str | None) -> None:
    """Apply pending schema migrations (safe to run from several processes at once)."""
    with open_database(database_url, run_migrations=False) as conn:
        applied = migrate(conn)
    for label in applied:
        click.echo(f"applied {label}")
    if not applied:
        click.echo("database schema is up to date")


@db_group.command("stop", cls=OneLineErrorCommand)
@cli_errors
def db_stop() -> None:
    """Stop the embedded PostgreSQL (the one in $PLUGIN_RUNTIME_DATA_DIR, else the user's data
    directory); it otherwise stays running between commands."""
    where = data_dir()
    pid = stop_embedded(where)
    if pid is None:
        click.echo(f"no embedded PostgreSQL is running in {where}")
    else:
        click.echo(f"stopped the embedded PostgreSQL in {where} (pid {pid})")


# -- plugins ------------------------------------------------------------------------------------


@main.group("plugins")
def plugins_group() -> None:
    """Install, list and remove plugins."""


CAP_FLAGS = {"timeout_s": "--timeout-cap-s", "cpu_s": "--cpu-cap-s", "memory_mb": "--memory-cap-mb"}


def limits_note(plugin: Plugin, caps: Limits = DEFAULT_LIMITS, *, serve_caps: bool = True) -> str:
    """What to tell the operator when the plugin asks for limits above the caps ("" if not)."""
    lowered = lowered_limits(plugin.manifest.limits, caps)
    if not lowered:
        return ""
    parts = [f"{name} {asked:g} -> {cap:g}" for name, asked, cap in lowered]
    where = (
        "the default caps of serve ("
        + ", ".join(CAP_FLAGS[name] for name, _a, _c in lowered)
        + " may differ)"
        if serve_caps
        else "the operator's caps"
    )
    return (
        f"note: plugin {plugin.name} asks for limits above {where}; its runs get the caps: "
        + ", ".join(parts)
    )


def no_tasks_message(plugin: Plugin) -> str:
    """Why a plugin with no scheduled function is refused, with a suggestion if one fits."""
    misses = near_misses(plugin)
    hint = "".join(
        f" `{fn}` is not a scheduled name: did you mean `{ok}`?" for fn, ok in misses.items()
    )
    known = ", ".join(n for n in CADENCE_FUNCTIONS if "_" in n)
    return (
        f"plugin {plugin.name} has no scheduled function, so it would never run.{hint} "
        f"(scheduled: {known} or their camelCase names, or a cron entry in plugin.json "
        "'schedules'; install it anyway with --allow-no-tasks)"
    )


@plugins_group.command("install", cls=OneLineErrorCommand)
@click.argument("directory")
@click.option(
    "--allow-no-tasks",
    is_flag=True,
    help="Install even a plugin with no scheduled function (it will never run by itself).",
)
@click.option(
    "--upgrade",
    is_flag=True,
    help="Replace the installed plugin of the same name (its configs run the new code).",
)
@click.option(
    "--reveal",
    "reveal",
    multiple=True,
    metavar="KEY",
    help="Stop masking setting KEY, which an earlier version declared secret (repeatable).",
)
@database_url_option
@cli_errors
def plugins_install(
    directory: str,
    allow_no_tasks: bool,
    upgrade: bool,
    reveal: tuple[str, ...],
    database_url: str | None,
) -> None:
    """Install the plugin in DIRECTORY. A plugin with no scheduled function is refused (exit 2)
    unless --allow-no-tasks. Replacing an installed plugin of the same name (other code or
    manifest) needs --upgrade; the report says old -> new version, source hash and the configs
    affected."""
    plugin = load_plugin(directory)
    from sandbox.policy import plugin_code_problems  # lazy: the compiler is not needed elsewhere

    problems = plugin_code_problems(plugin.source, plugin.manifest.main)
    if problems:
        # Every refused construct at once, one per line, so the author fixes them in one pass.
        click.echo(
            f"error: invalid plugin: {len(problems)} problem(s) in {plugin.manifest.main}:",
            err=True,
        )
        for problem in problems:
            echo(f"  {problem}", err=True)
        raise click.exceptions.Exit(EXIT_BAD_INPUT)
    if not plugin.tasks() and not allow_no_tasks:
        fail(no_tasks_message(plugin), EXIT_BAD_INPUT)
    note = limits_note(plugin)
    if note:
        click.echo(note, err=True)
    with open_database(database_url) as conn:
        done = store.install(conn, plugin, upgrade=upgrade, reveal=reveal)
    plugin = done.plugin
    tasks = store.plugin_tasks_json(plugin)
    described = ", ".join(f"{t['name']} ({t['cron']})" for t in tasks) or "none"
    version = plugin.manifest.version
    if done.previous_version is None:
        echo(f"installed plugin {plugin.name} {version} (id {done.plugin_id}); tasks: {described}")
    elif done.unchanged:
        echo(
            f"plugin {plugin.name} {version} (id {done.plugin_id}) is already installed, unchanged"
        )
    else:
        ids = ", ".join(map(str, done.config_ids))
        echo(
            f"upgraded plugin {plugin.name} {done.previous_version} -> {version} "
            f"(id {done.plugin_id}); source {done.previous_hash} -> "
            f"{store.source_hash(plugin.source)}; configs affected: "
            f"{f'{len(done.config_ids)} (id {ids})' if done.config_ids else 'none'}; "
            f"tasks: {described}"
        )
    if done.kept_secret:
        names = ", ".join(done.kept_secret)
        echo(
            f"still masked as secret (an earlier version declared them secret): {names}; "
            f"to show them, reinstall with --upgrade --reveal KEY",
            err=True,
        )


@plugins_group.command("list", cls=OneLineErrorCommand)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@database_url_option
@cli_errors
def plugins_list(as_json: bool, database_url: str | None) -> None:
    """List installed plugins."""
    with open_database(database_url) as conn:
        rows = store.list_plugins(conn)
    if as_json:
        print_json(rows)
        return
    for row in rows:
        row["task_names"] = ", ".join(t["name"] for t in row["tasks"])
    print_table(
        "plugins",
        [
            ("id", "id"),
            ("name", "name"),
            ("version", "version"),
            ("tasks", "task_names"),
            ("configs", "configs"),
            ("updated", "updated_at"),
        ],
        rows,
    )


@plugins_group.command("remove", cls=OneLineErrorCommand)
@click.argument("name")
@click.option("--force", is_flag=True, help="Also delete the plugin's configs.")
@database_url_option
@cli_errors
def plugins_remove(name: str, force: bool, database_url: str | None) -> None:
    """Uninstall plugin NAME (refused while it has configs, unless --force)."""
    with open_database(database_url) as conn:
        deleted = store.remove_plugin(conn, name, force=force)
    extra = f" and its {deleted} config(s)" if deleted else ""
    echo(f"removed plugin {name}{extra}")


# -- configs ------------------------------------------------------------------------------------

TIME_ZONE_HELP = (
    "IANA time zone (e.g. Europe/Berlin) its daily and cron tasks are computed in; default: the "
    "plugin's declared time_zone, else UTC. Minute and hourly tasks run every real minute and "
    "hour whatever the zone."
)


def effective_time_zone(row: Mapping[str, Any]) -> str:
    """A config's zone as the scheduler uses it: its own, else its plugin's, else UTC."""
    return str(row.get("time_zone") or row.get("plugin_time_zone") or "UTC")


@main.group("configs")
def configs_group() -> None:
    """Create, list, enable, disable, change and delete plugin configs."""


@configs_group.command("create", cls=OneLineErrorCommand)
@click.argument("plugin")
@click.option(
    "--config",
    "-c",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A setting (repeat for several); converted to the type the plugin declares.",
)
@click.option("--disabled", is_flag=True, help="Create it disabled.")
@click.option("--time-zone", "time_zone", metavar="ZONE", help=TIME_ZONE_HELP)
@database_url_option
@cli_errors
def configs_create(
    plugin: str,
    pairs: tuple[str, ...],
    disabled: bool,
    time_zone: str | None,
    database_url: str | None,
) -> None:
    """Create a config of installed PLUGIN; prints its id alone on the last line."""
    settings = parse_assignments(pairs)
    with open_database(database_url) as conn:
        config_id = store.create_config(
            conn, plugin, settings, enabled=not disabled, time_zone=time_zone
        )
        note = limits_note(store.get_plugin(conn, plugin))
    state = "disabled" if disabled else "enabled"
    zone = f", time zone {time_zone}" if time_zone else ""
    echo(f"created config {config_id} of plugin {plugin} ({state}{zone})", err=True)
    if note:
        click.echo(note, err=True)
    click.echo(str(config_id))


@configs_group.command("list", cls=OneLineErrorCommand)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@database_url_option
@cli_errors
def configs_list(as_json: bool, database_url: str | None) -> None:
    """List configs; secret settings are shown as ***."""
    with open_database(database_url) as conn:
        rows = store.list_configs(conn)
    if as_json:
        print_json(rows)
        return
    for row in rows:
        if row["quarantined_at"] is not None:
            row["status"] = f"quarantined: {row['quarantine_reason'] or ''}".strip()
        else:
            row["status"] = "enabled" if row["enabled"] else "disabled"
        row["task_names"] = ", ".join(row["tasks"])
        row["zone"] = effective_time_zone(row)
    print_table(
        "plugin configs",
        [
            ("id", "id"),
            ("plugin", "plugin"),
            ("version", "version"),
            ("status", "status"),
            ("failures", "consecutive_failures"),
            ("tasks", "task_names"),
            ("time zone", "zone"),
            ("settings", "settings"),
        ],
        rows,
    )


@configs_group.command("enable", cls=OneLineErrorCommand)
@click.argument("config_id", metavar="ID", type=int)
@database_url_option
@cli_errors
def configs_enable(config_id: int, database_url: str | None) -> None:
    """Enable config ID (also releases it from quarantine)."""
    with open_database(database_url) as conn:
        store.set_enabled(conn, config_id, True)
    click.echo(f"config {config_id} enabled")


@configs_group.command("disable", cls=OneLineErrorCommand)
@click.argument("config_id", metavar="ID", type=int)
@database_url_option
@cli_errors
def configs_disable(config_id: int, database_url: str | None) -> None:
    """Disable config ID: every node stops scheduling it within seconds."""
    with open_database(database_url) as conn:
        store.set_enabled(conn, config_id, False)
    click.echo(f"config {config_id} disabled")


@configs_group.command("set", cls=OneLineErrorCommand)
@click.argument("config_id", metavar="ID", type=int)
@click.argument("pairs", metavar="KEY=VALUE...", nargs=-1)
@click.option(
    "--time-zone",
    "time_zone",
    metavar="ZONE",
    help=TIME_ZONE_HELP + ' "" removes the config\'s own zone. A change re-initialises its daily '
    "and cron tasks at their first slot from now in the new zone.",
)
@database_url_option
@cli_errors
def configs_set(
    config_id: int, pairs: tuple[str, ...], time_zone: str | None, database_url: str | None
) -> None:
    """Change settings (KEY=VALUE...) or the time zone of config ID."""
    if not pairs and time_zone is None:
        raise click.UsageError("give at least one KEY=VALUE or --time-zone")
    changes = parse_assignments(pairs)
    if time_zone is not None:
        store.valid_time_zone(time_zone)  # refused before anything is written
    with open_database(database_url) as conn, conn.transaction():
        if changes:
            store.update_settings(conn, config_id, changes)
        if time_zone is not None:
            store.set_time_zone(conn, config_id, time_zone)
    done = sorted(changes) + (["time zone"] if time_zone is not None else [])
    echo(f"config {config_id}: updated {', '.join(done)}")


@configs_group.command("delete", cls=OneLineErrorCommand)
@click.argument("config_id", metavar="ID", type=int)
@database_url_option
@cli_errors
def configs_delete(config_id: int, database_url: str | None) -> None:
    """Delete config ID with its tasks and storage (its run history stays)."""
    with open_database(database_url) as conn:
        store.delete_config(conn, config_id)
    click.echo(f"config {config_id} deleted")


# -- trigger and runs ---------------------------------------------------------------------------


@main.command("trigger", cls=OneLineErrorCommand)
@click.argument("config_id", metavar="ID", type=int)
@click.argument("task")
@database_url_option
@cli_errors
def trigger_cmd(config_id: int, task: str, database_url: str | None) -> None:
    """Queue a manual run of TASK of config ID now; prints the run id alone on the last line."""
    with open_database(database_url) as conn:
        run_id = store.trigger(conn, config_id, task)
    echo(f"queued manual run {run_id} of {task} for config {config_id}", err=True)
    click.echo(str(run_id))


RUN_COLUMNS = [
    ("id", "id"),
    ("config", "config_id"),
    ("plugin", "plugin"),
    ("task", "task"),
    ("slot", "slot"),
    ("attempt", "attempt"),
    ("state", "state"),
    ("outcome", "outcome"),
    ("node", "node"),
    ("started", "started_at"),
    ("ms", "duration_ms"),
    ("error", "error_summary"),
]
TABLE_ERROR_CHARS = 80


@main.group("runs", cls=OneLineErrorGroup, invoke_without_command=True)
@click.option("--config", "config_id", type=int, metavar="ID", help="Only runs of this config.")
@click.option("--task", metavar="T", help="Only runs of this task (function name).")
@click.option(
    "--outcome",
    type=click.Choice(store.RUN_OUTCOMES),
    help="Only runs with this outcome.",
)
@click.option(
    "--cadence", type=click.Choice(store.CADENCES), help="Only runs of tasks of this cadence."
)
@limit_option(50, "How many runs to list (the newest).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@database_url_option
@click.pass_context
@cli_errors
def runs_cmd(
    ctx: click.Context,
    config_id: int | None,
    task: str | None,
    outcome: str | None,
    cadence: str | None,
    limit: int,
    as_json: bool,
    database_url: str | None,
) -> None:
    """Recent runs, newest first, with the error of each failed one.

    `plugin-runtime runs show ID` shows everything about one run."""
    if ctx.invoked_subcommand is not None:
        return  # `runs show`: its --database-url falls back to the one given here
    with open_database(database_url) as conn:
        rows = store.list_runs(
            conn, config_id=config_id, task=task, outcome=outcome, limit=limit, cadence=cadence
        )
        ids = {r["config_id"] for r in rows if r["config_id"] is not None}
        secrets = store.config_secrets(conn, sorted(ids))
    for row in rows:  # a run's error is the plugin's text: its config's secrets are masked
        row["error"] = Masker(secrets.get(row["config_id"], [])).fields(row["error"])
    if as_json:
        print_json(rows)
        return
    for row in rows:
        if isinstance(row["duration_ms"], float) and math.isfinite(row["duration_ms"]):
            row["duration_ms"] = round(row["duration_ms"])
        row["error_summary"] = error_summary(row["error"], TABLE_ERROR_CHARS)
    print_table("runs (newest first)", RUN_COLUMNS, rows)
    if any(row["error_summary"] for row in rows):
        click.echo("why a run failed: plugin-runtime runs show RUN_ID", err=True)


@runs_cmd.command("show", cls=OneLineErrorCommand)
@click.argument("run_id", metavar="ID", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@database_url_option
@cli_errors
def runs_show(run_id: int, as_json: bool, database_url: str | None) -> None:
    """Everything about run ID: config, task, slot, attempt, node, timings, outcome, error with
    its traceback, its log lines and a preview of its result."""
    with open_database(database_url) as conn:
        run = store.get_run(conn, run_id)
        secrets = store.config_secrets(conn, [run["config_id"]]).get(run["config_id"], [])
    mask = Masker(secrets)  # the run's error, logs and result are the plugin's text
    run["error"] = mask.fields(run["error"])
    run["logs"] = [{**line, "message": mask.text(str(line["message"]))} for line in run["logs"]]
    run["result_preview"] = mask(run["result_preview"])
    if as_json:
        print_json(run)
        return
    print_run(run)


def print_run(run: Mapping[str, Any]) -> None:
    """The readable report of one run (`runs show`)."""
    console = _console()

    def field(label: str, value: Any) -> None:
        console.print(
            f"[bold]{label:<11}[/] {markup_safe(_cell(value).plain or '-')}", soft_wrap=True
        )

    plugin = f"plugin {run['plugin']} {run['plugin_version']}" if run["plugin"] else "deleted"
    kind = "manual" if run["manual"] else ("backfilled" if run["backfilled"] else "scheduled")
    field("run", f"{run['id']} ({kind}, attempt {run['attempt']})")
    field("config", f"{run['config_id']} ({plugin})")
    zone = f" in {run['time_zone']}" if run.get("time_zone") else ""
    cadence = f" ({run['cadence']}, {run['cron']}{zone})" if run["cadence"] else ""
    field("task", f"{run['task']}{cadence}")
    field("slot", run["slot"])
    field("node", run["node"])
    field("state", run["state"])
    outcome = run["outcome"] or "-"
    style = "green" if outcome == "ok" else "bold red"
    console.print(f"[bold]{'outcome':<11}[/] [{style}]{markup_safe(outcome)}[/]")
    field("due", run["due_at"])
    field("started", run["started_at"])
    field("finished", run["finished_at"])
    timings = []
    if run["duration_ms"] is not None:
        timings.append(f"{run['duration_ms']:.0f} ms in the sandbox")
    if run["start_lag_s"] is not None and not run["manual"]:
        timings.append(f"started {float(run['start_lag_s']):.1f} s after slot + spread offset")
    field("timings", ", ".join(timings))
    error = run["error"]
    if error:
        console.print(f"[bold]{'error':<11}[/] [red]{markup_safe(error_summary(error, 10_000))}[/]")
        traceback = [str(x) for x in error.get("traceback") or []]
        if traceback:
            console.print("[bold]traceback[/]")
            for line in "".join(traceback).rstrip("\n").splitlines():
                console.print("  " + markup_safe(line), soft_wrap=True, highlight=False)
    logs = run["logs"]
    console.print(f"[bold]logs[/] ({len(logs)} line(s))")
    for line in logs:
        console.print(
            f"  {markup_safe(_cell(line['ts']).plain)} {markup_safe(str(line['level']).upper()):<7} "
            f"{markup_safe(str(line['message']))}",
            soft_wrap=True,
            highlight=False,
        )
    field("result", run["result_preview"])
