"""The `plugin-runtime` command. Thin: each command group lives in a module of its own and
registers itself on `main`; the work is done by the modules they call."""

from __future__ import annotations

import importlib

import click

# Modules that add commands to `main`, in the order they appear in --help.
COMMAND_MODULES = [
    "runtime.cli.run_cmd",
    "runtime.cli.db_cmds",
    "runtime.cli.serve_cmd",
    "runtime.cli.ops_cmds",
    "runtime.cli.demo_cmd",
    "runtime.cli.chaos_cmd",
]


DATABASE_URL_META = "plugin_runtime.database_url"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="plugin-runtime", prog_name="plugin-runtime")
@click.option(
    "--database-url",
    metavar="URL",
    default=None,
    help="PostgreSQL URL for the command that follows (the same as its own --database-url).",
)
@click.pass_context
def main(ctx: click.Context, database_url: str | None) -> None:
    """Run third-party plugins' scheduled tasks on time, isolated, from PostgreSQL."""
    if database_url:
        ctx.meta[DATABASE_URL_META] = database_url


for _name in COMMAND_MODULES:
    importlib.import_module(_name)
