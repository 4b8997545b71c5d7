"""Where a command's option values come from: flag > environment > TOML file > default.

`twelve_factor(prefix, section)` makes every option of a click command settable by an environment
variable `PREFIX<OPTION>` (`--timeout-cap-s` -> `PLUGIN_RUNTIME_TIMEOUT_CAP_S`) and by a key of
the `[section]` table of a TOML file given with `--config-file` (keys are the option names
without dashes in front: `timeout-cap-s = 30`, `timeout_cap_s` works too). Click does the
precedence: a flag wins over its environment variable, which wins over the `default_map` this
module fills from the file, which wins over the option's default. `effective_config` then says,
for each option, the value in force and where it came from, with secrets masked.

Options added later (by this command's other modules) get all of this too: the decorator walks
the command's parameters when it is applied.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click
from click.core import ParameterSource

CONFIG_FILE_PARAM = "config_file"
PRINT_CONFIG_PARAM = "print_config"
# Values never printed whole: a URL's password, a token. Matched on the option's name.
SECRET_WORDS = ("password", "secret", "token", "database_url")


@dataclass(frozen=True)
class ConfigValue:
    """One option's effective value and its origin (`flag`, `environment`, `file`, `default`)."""

    key: str  # the option as written in the file: "timeout-cap-s"
    value: Any
    source: str
    where: str  # the environment variable or file it came from ("" for a flag or a default)
    secret: bool


def option_key(param: click.Parameter) -> str:
    """The key of an option in the file: its longest flag name without the dashes."""
    flags = [o for o in getattr(param, "opts", []) if o.startswith("--")]
    return max(flags, key=len)[2:] if flags else str(param.name)


def env_name(prefix: str, param: click.Parameter) -> str:
    return prefix + option_key(param).upper().replace("-", "_")


def _configurable(param: click.Parameter) -> bool:
    return isinstance(param, click.Option) and param.name not in (
        CONFIG_FILE_PARAM,
        PRINT_CONFIG_PARAM,
        "help",
    )


def is_secret(key: str) -> bool:
    normal = key.replace("-", "_").lower()
    return any(word in normal for word in SECRET_WORDS)


def mask(key: str, value: Any) -> Any:
    """The value as it may be shown: a URL keeps all but its password, other secrets are ***."""
    if value is None or not is_secret(key):
        return value
    text = str(value)
    try:
        parts = urlsplit(text)
    except ValueError:
        return "***"
    if parts.scheme and parts.netloc:
        if parts.password is None:
            return text
        host = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    return "***"


def _load_file(ctx: click.Context, section: str, path: str) -> dict[str, Any]:
    """The `[section]` table of TOML file `path` as a click default_map (param name -> value),
    each value checked against its option's type; errors name the file and the key."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise click.BadParameter(f"{path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(f"{path} is not valid TOML: {exc}") from None
    table = data.get(section, {})
    if not isinstance(table, dict):
        raise click.BadParameter(f"{path}: '{section}' must be a table ([{section}])")
    by_key = {option_key(p): p for p in ctx.command.params if _configurable(p)}
    out: dict[str, Any] = {}
    for raw_key, value in table.items():
        key = raw_key.replace("_", "-")
        param = by_key.get(key)
        if param is None:
            known = ", ".join(sorted(by_key))
            raise click.BadParameter(
                f"{path}: unknown key '{raw_key}' in [{section}] (known: {known})"
            )
        if isinstance(value, dict | list) and not getattr(param, "multiple", False):
            raise click.BadParameter(f"{path}: '{raw_key}' must be a single value")
        try:
            param.type_cast_value(ctx, value)
        except click.BadParameter as exc:
            raise click.BadParameter(f"{path}: '{raw_key}': {exc.message}") from None
        assert param.name is not None
        out[param.name] = value
    return out


def twelve_factor(prefix: str, section: str) -> Callable[[click.Command], click.Command]:
    """Give every option of the command an environment variable and a key in `--config-file`,
    and add `--print-config`. Apply it above `@main.command(...)`."""

    def decorate(command: click.Command) -> click.Command:
        def load(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
            if value:
                ctx.default_map = {**(ctx.default_map or {}), **_load_file(ctx, section, value)}
            return value

        for param in command.params:
            if _configurable(param) and isinstance(param, click.Option):
                param.envvar = env_name(prefix, param)
                param.show_envvar = True
        command.params.insert(
            0,
            click.Option(
                ["--config-file"],
                CONFIG_FILE_PARAM,
                type=click.Path(dir_okay=False),
                envvar=prefix + "CONFIG_FILE",
                show_envvar=True,
                is_eager=True,
                expose_value=True,
                callback=load,
                metavar="FILE.toml",
                help=f"Read options from the [{section}] table of this TOML file "
                "(flag > environment > file > default).",
            ),
        )
        command.params.append(
            click.Option(
                ["--print-config"],
                PRINT_CONFIG_PARAM,
                is_flag=True,
                help="Print the effective options and where each came from (secrets masked), "
                "then exit.",
            )
        )
        return command

    return decorate


def effective_config(ctx: click.Context, prefix: str) -> list[ConfigValue]:
    """Every configurable option of the running command: value, source, masked if secret."""
    file = ctx.params.get(CONFIG_FILE_PARAM) or ""
    out: list[ConfigValue] = []
    for param in ctx.command.params:
        if not _configurable(param) or param.name is None:
            continue
        key = option_key(param)
        source = ctx.get_parameter_source(param.name)
        parent = ctx.parent
        if (
            source is not ParameterSource.COMMANDLINE
            and parent is not None
            and parent.get_parameter_source(param.name) is ParameterSource.COMMANDLINE
            and parent.params.get(param.name) == ctx.params.get(param.name)
        ):
            # The same option given before the command (`plugin-runtime --database-url URL serve`).
            source = ParameterSource.COMMANDLINE
        if source is ParameterSource.COMMANDLINE:
            origin, where = "flag", f"--{key}"
        elif source is ParameterSource.ENVIRONMENT:
            origin, where = "environment", env_name(prefix, param)
        elif source is ParameterSource.DEFAULT_MAP:
            origin, where = "file", file
        else:
            origin, where = "default", ""
        value = ctx.params.get(param.name)
        out.append(ConfigValue(key, mask(key, value), origin, where, is_secret(key)))
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def format_config(values: list[ConfigValue], section: str) -> str:
    """The effective options as a TOML table (usable as a --config-file), origins as comments."""
    lines = [f"[{section}]"]
    width = max((len(v.key) + len(_toml_value(v.value)) for v in values), default=0) + 3
    for v in values:
        origin = v.source + (f" {v.where}" if v.where else "")
        if v.value is None:
            lines.append(f"# {v.key} = (not set)".ljust(width + 2) + f"  # {origin}")
        else:
            lines.append(f"{v.key} = {_toml_value(v.value)}".ljust(width + 2) + f"  # {origin}")
    return "\n".join(lines) + "\n"
