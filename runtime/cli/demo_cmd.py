"""`plugin-runtime demo` (what `make run` does): install the examples on the embedded PostgreSQL
(or $PLUGIN_RUNTIME_DATABASE_URL), give each a config, and serve, showing runs as they happen."""

from __future__ import annotations

from pathlib import Path

import click

from runtime import store
from runtime.cli import main
from runtime.cli.db_cmds import cli_errors, database_url_option, open_database
from runtime.db import resolve_database_url
from runtime.logs import setup_logging
from runtime.node import Node, NodeSettings
from sandbox.manifest import load_plugin

# The healthy examples, and one faulty plugin to show that it harms no one else.
DEMO_PLUGINS = ("minute_counter", "camel_case", "daily_report", "faulty/infinite_loop")


def _examples_dir() -> Path:
    here = Path(__file__).resolve().parents[2] / "examples"
    return here if here.is_dir() else Path.cwd() / "examples"


@main.command("demo")
@database_url_option
@click.option(
    "--examples",
    "examples_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the example plugins are (default: the repo's examples/).",
)
@cli_errors
def demo_command(database_url: str | None, examples_dir: Path | None) -> None:
    """Install the examples, create a config for each, trigger a first run of each, and serve."""
    setup_logging("text")
    examples = examples_dir or _examples_dir()
    url = resolve_database_url(database_url)
    with open_database(url) as conn:
        existing = {row["plugin"] for row in store.list_configs(conn)}
        for name in DEMO_PLUGINS:
            plugin = load_plugin(examples / name)
            store.install_plugin(conn, plugin)
            if plugin.name not in existing:
                store.create_config(conn, plugin.name, {})
            click.echo(f"installed {plugin.name}: tasks {', '.join(sorted(plugin.tasks()))}")
        for config in store.list_configs(conn):
            if config["enabled"]:
                for task in config["tasks"]:
                    store.trigger(conn, config["id"], task)
    click.echo(
        "serving: each example ran once now; minute tasks run every minute from here on. "
        "Ctrl-C stops."
    )
    node = Node(url, NodeSettings(concurrency=8))
    node.install_signal_handlers()
    node.run()
