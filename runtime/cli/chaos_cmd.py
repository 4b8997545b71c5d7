"""`plugin-runtime chaos`: a real fleet on a throwaway database, faults on a schedule, and the
scheduling invariants checked from the runs table. Last line: `invariants: ok` or
`invariants: BROKEN (<which>)`; exit 1 when broken."""

from __future__ import annotations

import os
from typing import Any

import click

from runtime.cli import main
from runtime.cli.db_cmds import EXIT_BAD_INPUT, fail
from runtime.cli.options import Setting, settings_options
from runtime.db import DatabaseUnavailable, data_dir, embedded_database_url
from runtime.testing.chaos import ChaosOptions, run_chaos


@main.command("chaos")
@click.option(
    "--database-url",
    default=None,
    metavar="URL",
    help="Server to make the throwaway database on (default: $PLUGIN_RUNTIME_TEST_DATABASE_URL, "
    "$PLUGIN_RUNTIME_DATABASE_URL, else the embedded server). Needs CREATE DATABASE.",
)
@settings_options(
    (
        Setting("--nodes", "nodes", click.IntRange(1, 32), "How many serve nodes the fleet runs."),
        Setting(
            "--configs",
            "configs",
            click.IntRange(5, 100_000),
            "How many plugin configs (of the built-in chaos plugins) to schedule.",
        ),
        Setting(
            "--duration", "duration_s", click.FloatRange(5), "Real seconds of fault injection."
        ),
        Setting(
            "--time-scale",
            "time_scale",
            click.FloatRange(1),
            "Scheduler seconds per real second (600: an hour passes in 6 s).",
        ),
        Setting(
            "--kill-every",
            "kill_every_s",
            click.FloatRange(0),
            "SIGKILL a random node (and restart it) every N real seconds; 0: never.",
        ),
        Setting(
            "--pause-every",
            "pause_every_s",
            click.FloatRange(0),
            "SIGSTOP a node for a few seconds every N s (default: twice --kill-every).",
            shown=False,
        ),
        Setting(
            "--db-outage",
            "db_outage_s",
            click.FloatRange(0),
            "Cut the database off for N real seconds, half-way through; 0: never.",
        ),
        Setting(
            "--clock-jump",
            "clock_jump_minutes",
            click.FloatRange(0),
            "Jump every node's clock forward N minutes three quarters of the way through.",
            shown=False,
        ),
        Setting(
            "--settle",
            "settle_s",
            click.FloatRange(0),
            "Real seconds to let the fleet catch up after the last fault.",
        ),
        Setting(
            "--max-lag",
            "max_lag_s",
            float,
            "Bound on healthy tasks' start lag p99 outside fault windows (real s).",
        ),
    ),
    ChaosOptions(server_url=""),
)
@click.option(
    "--seed", type=int, default=None, help="Random seed of the fault schedule (default: random)."
)
@click.option("--keep", is_flag=True, help="Keep the throwaway database and node logs.")
@click.option(
    "--via-pgbouncer",
    is_flag=True,
    help="Connect every node through a PgBouncer of the run's own in transaction pooling mode "
    "(the system's pgbouncer binary).",
)
def chaos_command(
    database_url: str | None, seed: int | None, keep: bool, via_pgbouncer: bool, **faults: Any
) -> None:
    """Inject faults into a real fleet and check the scheduling invariants."""
    url = (
        database_url
        or os.environ.get("PLUGIN_RUNTIME_TEST_DATABASE_URL")
        or os.environ.get("PLUGIN_RUNTIME_DATABASE_URL")
    )
    if (
        faults["db_outage_s"] >= faults["duration_s"]
    ):  # bad input is refused before any server is started
        fail("--db-outage must be shorter than --duration", EXIT_BAD_INPUT)
    if not url:
        try:
            url = embedded_database_url(data_dir(), announce=True)
        except DatabaseUnavailable as exc:
            fail(str(exc), 3)
    assert url is not None
    report = run_chaos(
        ChaosOptions(
            server_url=url,
            **faults,
            seed=seed,
            keep=keep,
            pgbouncer=via_pgbouncer,
            log=lambda line: click.echo(line, err=True),
        )
    )
    for line in report.lines():
        click.echo(line)
    if report.broken():
        raise click.exceptions.Exit(1)
