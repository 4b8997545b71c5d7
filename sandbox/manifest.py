"""plugin.json: parse, validate, and find a plugin's scheduled functions.

Every error names the field it is about, so a plugin author can fix it without reading our code.
"""

from __future__ import annotations

import ast
import difflib
import errno
import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sandbox.cron import CronError, TimeZoneError, check_cron, check_time_zone


class Cadence(StrEnum):
    """How a task is scheduled: the one vocabulary of manifests, the scheduler and the database
    (a CHECK constraint holds `tasks.cadence` to these values)."""

    MINUTE = "minute"  # coalesces, never retried
    HOUR = "hour"
    DAY = "day"
    CRON = "cron"  # a schedule the plugin declares

    @property
    def retries(self) -> bool:
        """Never skips a slot within its catch-up window; failed slots are retried."""
        return self is not Cadence.MINUTE

    @property
    def zoned(self) -> bool:
        """Its slots are computed in the config's time zone (docs/plugins.md#time-zones);
        minute and hourly tasks run every real minute and hour whatever the zone."""
        return self in (Cadence.DAY, Cadence.CRON)


# The three fixed cadences, by both spellings a plugin may use, and their cron expression.
CADENCE_FUNCTIONS: dict[str, tuple[Cadence, str]] = {
    "run_every_minute": (Cadence.MINUTE, "* * * * *"),
    "runEveryMinute": (Cadence.MINUTE, "* * * * *"),
    "run_every_hour": (Cadence.HOUR, "0 * * * *"),
    "runEveryHour": (Cadence.HOUR, "0 * * * *"),
    "run_every_day": (Cadence.DAY, "0 0 * * *"),
    "runEveryDay": (Cadence.DAY, "0 0 * * *"),
}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_IDENT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,99}$")
_CONFIG_TYPES = {"string", "number", "integer", "boolean", "json"}
_KNOWN_KEYS = {
    "name",
    "version",
    "main",
    "description",
    "config_schema",
    "schedules",
    "allowed_hosts",
    "limits",
    "time_zone",
}
MAX_SOURCE_BYTES = 1024 * 1024  # the main file
MAX_MANIFEST_BYTES = 256 * 1024  # plugin.json
MAX_JSON_DEPTH = 64  # nesting of plugin.json and of a `json` setting's value
MAX_CRON_CHARS = 200
MAX_VERSION_CHARS = 64
MAX_DESCRIPTION_CHARS = 4000
_MAIN_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,96}\.py$")
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")


class ManifestError(ValueError):
    """A plugin directory or plugin.json that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Limits:
    """Per-run limits. `None` means "not set here" (the operator's default applies)."""

    timeout_s: float | None = None
    cpu_s: float | None = None
    memory_mb: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class ConfigField:
    type: str = "string"
    required: bool = False
    secret: bool = False
    default: Any = None
    description: str = ""


@dataclass(frozen=True)
class ScheduledTask:
    """One scheduled function of a plugin: its name, cadence and cron expression."""

    name: str
    cadence: Cadence
    cron: str


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    main: str = "main.py"
    description: str = ""
    config_schema: dict[str, ConfigField] = field(default_factory=dict)
    schedules: dict[str, str] = field(default_factory=dict)
    allowed_hosts: tuple[str, ...] = ()
    limits: Limits = Limits()
    time_zone: str | None = None  # the zone its daily and cron schedules are meant in (None: UTC)
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Plugin:
    """A plugin as the runtime stores and runs it: manifest plus the source of its main file."""

    manifest: Manifest
    source: str

    @property
    def name(self) -> str:
        return self.manifest.name

    def tasks(self) -> dict[str, ScheduledTask]:
        return scheduled_tasks(self.manifest, self.source)


def _fail(field_name: str, problem: str) -> ManifestError:
    return ManifestError(f"plugin.json: field '{field_name}': {problem}")


def _number(value: Any, field_name: str, *, integer: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(field_name, f"must be a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):  # NaN, Infinity, 1e999
        raise _fail(field_name, f"must be a finite number, got {value!r}")
    if value <= 0:
        raise _fail(field_name, "must be greater than 0")
    if integer and int(value) != value:
        raise _fail(field_name, "must be a whole number")
    return int(value) if integer else float(value)


def validate_cron(expression: Any, field_name: str, *, now: datetime | None = None) -> str:
    """`expression` if sandbox.cron accepts it (and it is at most MAX_CRON_CHARS long);
    otherwise a ManifestError naming `field_name`."""
    if isinstance(expression, str) and len(expression) > MAX_CRON_CHARS:
        raise _fail(field_name, f"a cron expression is at most {MAX_CRON_CHARS} characters")
    try:
        return check_cron(expression, now)
    except CronError as exc:
        raise _fail(field_name, str(exc)) from None


def parse_manifest(data: Any) -> Manifest:
    """Validate a decoded plugin.json. Raises ManifestError naming the offending field."""
    if not isinstance(data, dict):
        raise ManifestError("plugin.json: must be a JSON object")
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise _fail(unknown[0], f"unknown field (known: {', '.join(sorted(_KNOWN_KEYS))})")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise _fail("name", "required; letters, digits, '_', '-', '.', at most 100 characters")
    version = data.get("version", "0.0.0")
    if (
        not isinstance(version, str)
        or not version.strip()
        or len(version) > MAX_VERSION_CHARS
        or _CONTROL_RE.search(version)
    ):
        raise _fail(
            "version",
            f"must be a non-empty string of at most {MAX_VERSION_CHARS} printable characters",
        )
    main = data.get("main", "main.py")
    if not isinstance(main, str) or not _MAIN_RE.match(main):
        raise _fail("main", "must be a .py file name in the plugin directory")
    description = data.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
        raise _fail(
            "description", f"must be a string of at most {MAX_DESCRIPTION_CHARS} characters"
        )

    schema_raw = data.get("config_schema", {})
    if not isinstance(schema_raw, dict):
        raise _fail(
            "config_schema", "must be an object of setting name -> {type, required, secret}"
        )
    schema: dict[str, ConfigField] = {}
    for key, spec in schema_raw.items():
        where = f"config_schema.{key}"
        if not _IDENT_RE.match(key):
            raise _fail(where, "setting names are identifiers (letters, digits, '_')")
        if not isinstance(spec, dict):
            raise _fail(where, "must be an object")
        extra = set(spec) - {"type", "required", "secret", "default", "description"}
        if extra:
            raise _fail(f"{where}.{sorted(extra)[0]}", "unknown field")
        ftype = spec.get("type", "string")
        if ftype not in _CONFIG_TYPES:
            raise _fail(f"{where}.type", f"must be one of {sorted(_CONFIG_TYPES)}")
        for flag in ("required", "secret"):
            if not isinstance(spec.get(flag, False), bool):
                raise _fail(f"{where}.{flag}", "must be true or false")
        if "default" in spec and not _default_fits(ftype, spec["default"]):
            raise _fail(f"{where}.default", f"must be of its type, {ftype}")
        schema[key] = ConfigField(
            type=ftype,
            required=spec.get("required", False),
            secret=spec.get("secret", False),
            default=spec.get("default"),
            description=_description(spec.get("description", ""), f"{where}.description"),
        )

    schedules_raw = data.get("schedules", {})
    if not isinstance(schedules_raw, dict):
        raise _fail("schedules", "must be an object of function name -> cron expression")
    schedules: dict[str, str] = {}
    for fn, expr in schedules_raw.items():
        if not _IDENT_RE.match(fn):
            raise _fail(f"schedules.{fn}", "must name a function (an identifier)")
        if fn in CADENCE_FUNCTIONS:
            raise _fail(
                f"schedules.{fn}", "is already scheduled by its name; remove it from schedules"
            )
        schedules[fn] = validate_cron(expr, f"schedules.{fn}")

    hosts_raw = data.get("allowed_hosts", [])
    if not isinstance(hosts_raw, list) or not all(isinstance(h, str) and h for h in hosts_raw):
        raise _fail("allowed_hosts", "must be a list of host names")

    limits_raw = data.get("limits", {})
    if not isinstance(limits_raw, dict):
        raise _fail("limits", "must be an object with timeout_s, cpu_s, memory_mb")
    extra = set(limits_raw) - {"timeout_s", "cpu_s", "memory_mb"}
    if extra:
        raise _fail(
            f"limits.{sorted(extra)[0]}", "unknown limit (known: timeout_s, cpu_s, memory_mb)"
        )
    limits = Limits(
        timeout_s=_number(limits_raw["timeout_s"], "limits.timeout_s")
        if "timeout_s" in limits_raw
        else None,
        cpu_s=_number(limits_raw["cpu_s"], "limits.cpu_s") if "cpu_s" in limits_raw else None,
        memory_mb=int(_number(limits_raw["memory_mb"], "limits.memory_mb", integer=True))
        if "memory_mb" in limits_raw
        else None,
    )
    time_zone = data.get("time_zone")
    if time_zone is not None:
        try:
            check_time_zone(time_zone)
        except TimeZoneError as exc:
            raise _fail("time_zone", str(exc)) from None
    return Manifest(
        name=name,
        version=version,
        main=main,
        description=description,
        config_schema=schema,
        schedules=schedules,
        allowed_hosts=tuple(h.lower() for h in hosts_raw),
        limits=limits,
        time_zone=time_zone,
        raw=data,
    )


def _default_fits(ftype: str, value: Any) -> bool:
    """Whether a config_schema default (a JSON value) has the setting's declared type."""
    if ftype == "json" or value is None:
        return True
    if ftype == "string":
        return isinstance(value, str)
    if ftype == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if ftype == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return isinstance(value, int | float)  # number


def near_misses(plugin: Plugin) -> dict[str, str]:
    """Functions of the plugin that look like a misspelt scheduled function name (e.g.
    `run_every_hr` -> `run_every_hour`), so that an install that schedules nothing can say so."""
    functions = defined_functions(plugin.source, plugin.manifest.main)
    scheduled = set(plugin.tasks())
    known = list(CADENCE_FUNCTIONS)
    folded = {name.lower().replace("_", ""): name for name in known}
    out: dict[str, str] = {}
    for fn in sorted(functions - scheduled):
        if fn.lower().replace("_", "") in folded:
            out[fn] = folded[fn.lower().replace("_", "")]
            continue
        close = difflib.get_close_matches(fn, known, n=1, cutoff=0.75)
        if close:
            out[fn] = close[0]
    return out


def _description(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION_CHARS:
        raise _fail(field_name, f"must be a string of at most {MAX_DESCRIPTION_CHARS} characters")
    return value


def json_depth(text: str) -> int:
    """How deeply the arrays and objects in JSON `text` nest (brackets inside strings do not
    count), found without parsing: the parser itself recurses and would overflow first."""
    outside = _JSON_STRING_RE.sub('""', text)
    depth = deepest = 0
    for match in _JSON_BRACKET_RE.finditer(outside):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


_JSON_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET_RE = re.compile(r"[\[\]{}]")


def loads_bounded(text: str, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads(text)`, refusing nesting deeper than `max_depth` with a one-line ValueError
    that starts with `what` (JSON syntax errors too; a JSONDecodeError is a ValueError)."""
    if json_depth(text) > max_depth:
        raise ValueError(f"{what}: JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what}, line {exc.lineno}: not valid JSON: {exc.msg}") from None
    except RecursionError:  # not reached after the depth check; kept as a last line
        raise ValueError(f"{what}: JSON nested too deeply") from None


def read_plugin_file(directory_fd: int, name: str, max_bytes: int, what: str) -> str:
    """The text of `name` in the plugin directory: a regular file (not a symbolic link, device,
    FIFO, socket or directory) of at most `max_bytes`, in UTF-8. Opened relative to the
    directory, without following a link and without blocking, so what is checked is what is
    read."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(name, flags, dir_fd=directory_fd)
    except FileNotFoundError:
        raise ManifestError(f"{what}: not found in the plugin directory") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ManifestError(
                f"{what}: is a symbolic link; install reads only regular files"
            ) from None
        raise ManifestError(f"{what}: cannot be opened: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ManifestError(f"{what}: not a regular file; install reads only regular files")
        if info.st_size > max_bytes:
            raise ManifestError(f"{what}: larger than {max_bytes} bytes")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # it grew while being read
        raise ManifestError(f"{what}: larger than {max_bytes} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{what}: not UTF-8 text") from None


def defined_functions(source: str, filename: str = "main.py") -> set[str]:
    """Names of the top-level functions in a plugin's source (found by parsing, never by running)."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise ManifestError(f"{filename}, line {exc.lineno}: syntax error: {exc.msg}") from exc
    except (RecursionError, MemoryError, ValueError) as exc:  # nesting too deep, NUL bytes
        raise ManifestError(f"{filename}: cannot be parsed: {type(exc).__name__}") from None
    return {
        node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def scheduled_tasks(manifest: Manifest, source: str) -> dict[str, ScheduledTask]:
    """The plugin's scheduled functions: the cadence functions it defines plus its cron schedules."""
    functions = defined_functions(source, manifest.main)
    tasks: dict[str, ScheduledTask] = {}
    for fn, (cadence, cron) in CADENCE_FUNCTIONS.items():
        if fn in functions:
            tasks[fn] = ScheduledTask(fn, cadence, cron)
    for fn, cron in manifest.schedules.items():
        if fn not in functions:
            raise _fail(f"schedules.{fn}", f"no function '{fn}' is defined in {manifest.main}")
        tasks[fn] = ScheduledTask(fn, Cadence.CRON, cron)
    return tasks


def load_plugin(directory: str | Path) -> Plugin:
    """Read and validate a plugin directory. Raises ManifestError with a one-line reason."""
    plugin = read_plugin_dir(directory)
    plugin.tasks()  # validates that every cron schedule names a defined function
    return plugin


def read_plugin_dir(directory: str | Path) -> Plugin:
    """plugin.json (validated) and the main file's source, not yet parsed.

    Only two regular files inside the directory are read, plugin.json and the main file, each
    size-capped; a symbolic link, device or FIFO in their place is refused."""
    try:
        directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (OSError, ValueError):
        raise ManifestError(f"{directory}: no such plugin directory") from None
    try:
        text = read_plugin_file(directory_fd, "plugin.json", MAX_MANIFEST_BYTES, "plugin.json")
        try:
            data = loads_bounded(text, "plugin.json")
        except ValueError as exc:
            raise ManifestError(str(exc)) from None
        manifest = parse_manifest(data)
        source = read_plugin_file(
            directory_fd,
            manifest.main,
            MAX_SOURCE_BYTES,
            f"plugin.json: field 'main': '{manifest.main}'",
        )
    finally:
        os.close(directory_fd)
    return Plugin(manifest=manifest, source=source)


def plugin_from_stored(manifest_json: dict[str, Any], source: str) -> Plugin:
    """Rebuild a Plugin from what the database stored (already validated at install)."""
    return Plugin(manifest=parse_manifest(manifest_json), source=source)
