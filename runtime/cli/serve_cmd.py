"""`plugin-runtime serve`: run one supervisor node until SIGTERM."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import click

from runtime.cli import main
from runtime.cli.config_sources import effective_config, format_config, twelve_factor
from runtime.cli.db_cmds import EXIT_BAD_INPUT, database_url_option, fail
from runtime.cli.options import Setting, settings_options
from runtime.clock import Clock, parse_time
from runtime.db import DatabaseUnavailable, InvalidDatabaseUrl, resolve_database_url
from runtime.logs import setup_logging
from runtime.node import Node, NodeSettings
from runtime.schedule import ScheduleError, SchedulePolicy
from sandbox import Limits
from sandbox.layers import EXPOSES, parse_layer_list
from sandbox.services import parse_networks

CAPABILITIES = ("scheduledTasks",)
# Every option is also PLUGIN_RUNTIME_<OPTION> and a key of [serve] in --config-file.
ENV_PREFIX = "PLUGIN_RUNTIME_"
FILE_SECTION = "serve"
# The defaults of serve's options, from where they live (the node's settings, the run limits,
# the scheduling policy), in the options' own units.
_NODE = NodeSettings(node_id="-")
SERVE_DEFAULTS = SimpleNamespace(
    concurrency=_NODE.concurrency,
    quarantine_after=_NODE.quarantine_after,
    runs_retention_days=_NODE.runs_retention_days,
    logs_retention_days=_NODE.logs_retention_days,
    timeout_cap_s=_NODE.caps.timeout_s,
    cpu_cap_s=_NODE.caps.cpu_s,
    memory_cap_mb=_NODE.caps.memory_mb,
    tick_interval=_NODE.tick_interval_s,
    dead_after=_NODE.dead_after_s,
    hourly_window_h=_NODE.policy.window["hour"].total_seconds() / 3600,
    daily_window_d=_NODE.policy.window["day"].total_seconds() / 86400,
    reconcile_interval=_NODE.reconcile_interval_s,
)


@twelve_factor(ENV_PREFIX, FILE_SECTION)
@main.command("serve")
@database_url_option
@settings_options(
    (
        Setting(
            "--concurrency", "concurrency", click.IntRange(1, 4096), "Runs at once on this node."
        ),
    ),
    SERVE_DEFAULTS,
)
@click.option("--node-id", default=None, help="This node's name in the fleet (default: host-pid).")
@click.option(
    "--http",
    "http_addr",
    default=None,
    metavar="HOST:PORT",
    help="Serve /metrics, /healthz, /readyz and the status page here.",
)
@click.option(
    "--http-allowed-hosts",
    "http_allowed_hosts",
    default="",
    metavar="NAMES",
    help="Comma-separated host names the HTTP port answers to besides IP addresses, "
    "localhost, this host's name and the bind address ('*.example.com' matches subdomains; "
    "'*' any name).",
)
@click.option(
    "--capabilities",
    default="scheduledTasks",
    show_default=True,
    help="Comma-separated: scheduledTasks (schedule and run tasks). Without it the node "
    "only heartbeats and runs manual triggers.",
)
@settings_options(
    (
        Setting(
            "--quarantine-after",
            "quarantine_after",
            click.IntRange(0),
            "Quarantine a config after this many failed runs in a row (0: never).",
        ),
        Setting(
            "--runs-retention-days",
            "runs_retention_days",
            float,
            "Delete finished runs older than this (0: keep forever).",
        ),
        Setting(
            "--logs-retention-days",
            "logs_retention_days",
            float,
            "Delete run log lines older than this (0: keep forever).",
        ),
        Setting(
            "--timeout-cap-s",
            "timeout_cap_s",
            float,
            "Operator cap on a run's wall time (a plugin may ask for less).",
        ),
        Setting(
            "--cpu-cap-s",
            "cpu_cap_s",
            float,
            "Operator cap on a run's CPU seconds (a plugin may ask for less).",
        ),
        Setting(
            "--memory-cap-mb",
            "memory_cap_mb",
            int,
            "Operator cap on a run's address space in MiB (a plugin may ask for less).",
        ),
    ),
    SERVE_DEFAULTS,
)
@click.option(
    "--allow-networks",
    metavar="CIDR,...",
    default="",
    help="Networks meta.fetch may reach although they are private or local, e.g. "
    "10.20.0.0/16,192.168.1.5 (the plugin's allowed_hosts still applies). Loopback only if "
    "listed (127.0.0.0/8). Default: public addresses only.",
)
@settings_options(
    (
        Setting(
            "--tick-interval",
            "tick_interval",
            float,
            "Seconds between claims of due tasks (each claim takes a batch; runs are "
            "claimed this far ahead and start at their due time).",
        ),
        Setting(
            "--dead-after",
            "dead_after",
            float,
            "Real seconds without a heartbeat after which a node's runs are released.",
        ),
        Setting(
            "--hourly-window-h",
            "hourly_window_h",
            float,
            "Catch-up window of hourly tasks, in hours; older slots are recorded as missed.",
        ),
        Setting(
            "--daily-window-d",
            "daily_window_d",
            float,
            "Catch-up window of daily tasks, in days; older slots are recorded as missed.",
        ),
    ),
    SERVE_DEFAULTS,
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Default: text on a terminal, JSON lines otherwise.",
)
@click.option(
    "--require-layers",
    default="",
    metavar="LIST",
    help="Comma-separated sandbox layers (e.g. seccomp,landlock,netns,chroot) without which the "
    "node refuses to start (exit 2): a layer lost after a host change is then an error, not a "
    "silent downgrade.",
)
@click.option(
    "--listen-database-url",
    default=None,
    metavar="URL",
    help="A direct connection to PostgreSQL for LISTEN alone, when --database-url goes "
    "through a pooler in transaction mode (PgBouncer): changes then take effect at once.",
)
@click.option(
    "--no-listen",
    is_flag=True,
    help="Do not LISTEN for changes (no session to listen on): they take effect at the "
    "periodic reconcile. Without it, a listener that hears nothing falls back by itself.",
)
@settings_options(
    (
        Setting(
            "--reconcile-interval",
            "reconcile_interval",
            click.FloatRange(min=0.1),
            "Seconds between full reconciles of configs (what a change takes at most to take "
            "effect when notifications do not arrive).",
        ),
    ),
    SERVE_DEFAULTS,
)
@click.option(
    "--testing", is_flag=True, help="Allow test-only options (--time-scale, --start-time)."
)
@click.option("--time-scale", type=float, default=1.0, help="[--testing] scheduler clock speed.")
@click.option("--start-time", default=None, help="[--testing] scheduler clock start (ISO 8601).")
@click.option(
    "--clock-origin",
    type=float,
    default=None,
    help="[--testing] Unix time at which the scheduler clock read --start-time.",
)
@click.option(
    "--jump-on-sigusr1",
    type=float,
    default=0.0,
    help="[--testing] minutes the scheduler clock jumps forward on each SIGUSR1.",
)
def serve_command(
    database_url: str | None,
    concurrency: int,
    node_id: str | None,
    http_addr: str | None,
    http_allowed_hosts: str,
    capabilities: str,
    quarantine_after: int,
    runs_retention_days: float,
    logs_retention_days: float,
    timeout_cap_s: float,
    cpu_cap_s: float,
    memory_cap_mb: int,
    allow_networks: str,
    tick_interval: float,
    dead_after: float,
    hourly_window_h: float,
    daily_window_d: float,
    log_format: str | None,
    require_layers: str,
    listen_database_url: str | None,
    no_listen: bool,
    reconcile_interval: float,
    testing: bool,
    time_scale: float,
    start_time: str | None,
    clock_origin: float | None,
    jump_on_sigusr1: float,
    config_file: str | None,
    print_config: bool,
) -> None:
    """Run a supervisor node: schedule and run plugin tasks until SIGTERM.

    Every option can also be set by a PLUGIN_RUNTIME_<OPTION> environment variable or in the
    [serve] table of --config-file (flag > environment > file > default); --print-config shows
    which applies."""
    if print_config:
        ctx = click.get_current_context()
        click.echo(format_config(effective_config(ctx, ENV_PREFIX), FILE_SECTION), nl=False)
        return
    setup_logging(log_format)
    if (time_scale != 1.0 or start_time or clock_origin or jump_on_sigusr1) and not testing:
        fail(
            "--time-scale, --start-time, --clock-origin and --jump-on-sigusr1 are for testing "
            "only: add --testing",
            EXIT_BAD_INPUT,
        )
    if time_scale <= 0:
        fail("--time-scale must be > 0", EXIT_BAD_INPUT)
    try:
        required = parse_layer_list(require_layers)
    except ValueError as exc:
        fail(f"--require-layers: {exc}", EXIT_BAD_INPUT)
    caps = [c.strip() for c in capabilities.split(",") if c.strip()]
    unknown = [c for c in caps if c not in CAPABILITIES]
    if unknown:
        fail(
            f"unknown capability '{unknown[0]}' (known: {', '.join(CAPABILITIES)})", EXIT_BAD_INPUT
        )
    try:
        clock = Clock(parse_time(start_time) if start_time else None, time_scale, clock_origin)
    except ValueError as exc:
        fail(f"--start-time: {exc}", EXIT_BAD_INPUT)
    try:
        networks = parse_networks(allow_networks)
    except ValueError as exc:
        fail(f"--allow-networks: {exc}", EXIT_BAD_INPUT)
    if networks:
        logging.getLogger("plugin_runtime.serve").info(
            "meta.fetch may reach these non-public networks: %s",
            ", ".join(str(n) for n in networks),
        )
    try:
        policy = SchedulePolicy.from_overrides(
            window={"hour": hourly_window_h * 3600, "day": daily_window_d * 86400}
        )
    except ScheduleError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    settings = NodeSettings(
        concurrency=concurrency,
        capabilities=tuple(caps),
        quarantine_after=quarantine_after,
        caps=Limits(timeout_s=timeout_cap_s, cpu_s=cpu_cap_s, memory_mb=memory_cap_mb),
        tick_interval_s=tick_interval,
        lookahead_s=tick_interval + 1.0,
        flush_interval_s=tick_interval,
        policy=policy,
        dead_after_s=dead_after,
        runs_retention_days=runs_retention_days or None,
        logs_retention_days=logs_retention_days or None,
        allow_networks=networks,
        reconcile_interval_s=reconcile_interval,
        listen_database_url=listen_database_url,
        listen=not no_listen,
    )
    if listen_database_url and no_listen:
        fail("--listen-database-url and --no-listen contradict each other", EXIT_BAD_INPUT)
    if node_id:
        settings.node_id = node_id
    try:
        url = resolve_database_url(database_url)
    except (DatabaseUnavailable, InvalidDatabaseUrl) as exc:
        fail(str(exc), 3)
    node = Node(url, settings, clock)
    if required:
        _require_layers(node, required)
    node.install_signal_handlers()
    if jump_on_sigusr1:
        import signal
        from datetime import timedelta

        signal.signal(signal.SIGUSR1, lambda *_: clock.jump(timedelta(minutes=jump_on_sigusr1)))
    if http_addr:
        from runtime.http import serve_http

        allowed = [h.strip() for h in http_allowed_hosts.split(",") if h.strip()]
        serve_http(http_addr, node, allowed_hosts=allowed)
    node.run()


def _require_layers(node: Node, required: list[str]) -> None:
    """Start the sandbox now and refuse to serve (exit 2) if it lacks a required layer."""
    sandbox = node.sandbox
    sandbox.start()
    missing = [name for name in required if not sandbox.layers.get(name)]
    if missing:
        sandbox.close()
        why = "; ".join(
            f"{name}: {sandbox.layer_reasons.get(name, 'not available')} (exposes {EXPOSES[name]})"
            for name in missing
        )
        fail(
            f"required sandbox layer(s) missing: {', '.join(missing)} "
            f"(posture {sandbox.posture}: {sandbox.posture_reason}). {why}",
            EXIT_BAD_INPUT,
        )
