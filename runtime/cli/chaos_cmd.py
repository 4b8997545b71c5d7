"""`plugin-runtime chaos`: a real fleet on a throwaway database, faults on a schedule, and the
scheduling invariants checked from the runs table. Last line: `invariants: ok` or
`invariants: BROKEN (<which>)`; exit 1 when broken."""

from __future__ import annotations

import os

import click

from runtime.cli import main
from runtime.cli.db_cmds import EXIT_BAD_INPUT, fail
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
@click.option(
    "--nodes",
    type=click.IntRange(1, 32),
    default=3,
    show_default=True,
    help="How many serve nodes the fleet runs.",
)
@click.option(
    "--configs",
    type=click.IntRange(5, 100_000),
    default=200,
    show_default=True,
    help="How many plugin configs (of the built-in chaos plugins) to schedule.",
)
@click.option(
    "--duration",
    type=click.FloatRange(5),
    default=120.0,
    show_default=True,
    help="Real seconds of fault injection.",
)
@click.option(
    "--time-scale",
    type=click.FloatRange(1),
    default=600.0,
    show_default=True,
    help="Scheduler seconds per real second (600: an hour passes in 6 s).",
)
@click.option(
    "--kill-every",
    type=click.FloatRange(0),
    default=15.0,
    show_default=True,
    help="SIGKILL a random node (and restart it) every N real seconds; 0: never.",
)
@click.option(
    "--pause-every",
    type=click.FloatRange(0),
    default=0.0,
    help="SIGSTOP a node for a few seconds every N s (default: twice --kill-every).",
)
@click.option(
    "--db-outage",
    type=click.FloatRange(0),
    default=20.0,
    show_default=True,
    help="Cut the database off for N real seconds, half-way through; 0: never.",
)
@click.option(
    "--clock-jump",
    type=click.FloatRange(0),
    default=0.0,
    help="Jump every node's clock forward N minutes three quarters of the way through.",
)
@click.option(
    "--settle",
    type=click.FloatRange(0),
    default=20.0,
    show_default=True,
    help="Real seconds to let the fleet catch up after the last fault.",
)
@click.option(
    "--max-lag",
    type=float,
    default=5.0,
    show_default=True,
    help="Bound on healthy tasks' start lag p99 outside fault windows (real s).",
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
    database_url: str | None,
    nodes: int,
    configs: int,
    duration: float,
    time_scale: float,
    kill_every: float,
    pause_every: float,
    db_outage: float,
    clock_jump: float,
    settle: float,
    max_lag: float,
    seed: int | None,
    keep: bool,
    via_pgbouncer: bool,
) -> None:
    """Inject faults into a real fleet and check the scheduling invariants."""
    url = (
        database_url
        or os.environ.get("PLUGIN_RUNTIME_TEST_DATABASE_URL")
        or os.environ.get("PLUGIN_RUNTIME_DATABASE_URL")
    )
    if db_outage >= duration:  # bad input is refused before any server is started
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
            nodes=nodes,
            configs=configs,
            duration_s=duration,
            time_scale=time_scale,
            kill_every_s=kill_every,
            pause_every_s=pause_every,
            db_outage_s=db_outage,
            clock_jump_minutes=clock_jump,
            settle_s=settle,
            max_lag_s=max_lag,
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
