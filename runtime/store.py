"""Admin operations on the database: plugins, plugin configs, their tasks, manual triggers, runs.

Every function takes an open connection (autocommit; any row factory) and does its work in one
transaction. Errors an operator can fix are `StoreError`s with a one-line message:
`NotFound` for unknown plugins/configs/tasks, `ConfigError` for settings that do not fit the
plugin's `config_schema`. Secret setting values never appear in a message or a listing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from runtime.queries import query
from runtime.text import SECRET_MASK as SECRET_MASK  # re-exported: one mask
from runtime.text import secret_values
from sandbox.cron import TimeZoneError, check_time_zone
from sandbox.manifest import (
    MAX_JSON_DEPTH,
    Cadence,
    ConfigField,
    Manifest,
    Plugin,
    json_depth,
    loads_bounded,
    parse_manifest,
    plugin_from_stored,
)
from sandbox.outcome import Outcome

Conn = psycopg.Connection[Any]
_TRUE = {"true", "1", "yes", "on", "y", "t"}
_FALSE = {"false", "0", "no", "off", "n", "f"}


class StoreError(Exception):
    """An admin operation refused, with a one-line reason for the operator."""


class NotFound(StoreError):
    """No such plugin, config or task."""


class ConfigError(StoreError):
    """Settings that do not fit the plugin's config_schema; `key` names the setting."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


# -- helpers ------------------------------------------------------------------------------------


def _rows(conn: Conn, name: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query(name), params)
        return cur.fetchall() if cur.description else []


def _row(conn: Conn, name: str, params: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    rows = _rows(conn, name, params)
    return rows[0] if rows else None


def _count(conn: Conn, name: str, params: Mapping[str, Any] | None = None) -> int:
    with conn.cursor() as cur:
        cur.execute(query(name), params)
        return max(cur.rowcount, 0)


def _plugin_row(conn: Conn, name: str) -> dict[str, Any]:
    row = _row(conn, "get_plugin_by_name", {"name": name})
    if row is None:
        raise NotFound(f"no plugin named '{name}' is installed")
    return row


# -- plugins ------------------------------------------------------------------------------------


def plugin_tasks_json(plugin: Plugin) -> list[dict[str, str]]:
    """What `plugins.tasks` stores: [{"name", "cadence", "cron"}], sorted by name."""
    return [
        {"name": t.name, "cadence": t.cadence, "cron": t.cron}
        for t in sorted(plugin.tasks().values(), key=lambda t: t.name)
    ]


def source_hash(source: str) -> str:
    """How install reports a plugin's code: `sha256:` and the first 12 hex digits."""
    return "sha256:" + hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()[:12]


@dataclass(frozen=True)
class Installed:
    """What `install` did. `previous` is None for a first install; `unchanged` when the same
    code and manifest were already installed (nothing written)."""

    plugin_id: int
    plugin: Plugin  # as stored (with fields kept secret)
    previous_version: str | None = None
    previous_hash: str | None = None
    unchanged: bool = False
    config_ids: tuple[int, ...] = ()
    kept_secret: tuple[str, ...] = ()  # settings still secret although the new manifest says not


class ReplaceRefused(StoreError):
    """An install that would replace an installed plugin's code without --upgrade."""


def _keep_secrets(
    plugin: Plugin, old_manifest: Mapping[str, Any], reveal: Sequence[str]
) -> tuple[Plugin, tuple[str, ...]]:
    """`plugin` with every setting that was secret in the installed version still secret,
    unless the operator named it in `reveal`: a stored secret stays masked whatever a new
    version of the plugin declares."""
    old = parse_manifest(old_manifest).config_schema
    new = plugin.manifest.config_schema
    kept = sorted(
        k
        for k, spec in new.items()
        if not spec.secret and k in old and old[k].secret and k not in reveal
    )
    if not kept:
        return plugin, ()
    raw = copy.deepcopy(plugin.manifest.raw)
    for key in kept:
        raw["config_schema"][key]["secret"] = True
    return Plugin(manifest=parse_manifest(raw), source=plugin.source), tuple(kept)


def install(
    conn: Conn, plugin: Plugin, *, upgrade: bool = False, reveal: Sequence[str] = ()
) -> Installed:
    """Install `plugin`. A plugin of the same name with other code or manifest is replaced only
    with `upgrade` (else `ReplaceRefused`, saying what would change); the same code again is a
    no-op. Settings that were secret stay secret (see `_keep_secrets`). The tasks of existing
    configs follow the new version (see `sync_tasks`)."""
    with conn.transaction():
        old = _row(conn, "get_plugin_for_install", {"name": plugin.name})
        kept: tuple[str, ...] = ()
        if old is not None:
            plugin, kept = _keep_secrets(plugin, old["manifest"], reveal)
            config_ids = tuple(
                int(r["id"]) for r in _rows(conn, "plugin_config_ids", {"plugin_id": old["id"]})
            )
            before = Installed(
                plugin_id=int(old["id"]),
                plugin=plugin,
                previous_version=old["version"],
                previous_hash=source_hash(old["source"]),
                config_ids=config_ids,
                kept_secret=kept,
            )
            if old["source"] == plugin.source and old["manifest"] == plugin.manifest.raw:
                return replace(before, unchanged=True)
            if not upgrade:
                ids = ", ".join(map(str, config_ids[:10])) + (
                    ", ..." if len(config_ids) > 10 else ""
                )
                affected = f"{len(config_ids)} config(s) (id {ids})" if config_ids else "no configs"
                raise ReplaceRefused(
                    f"plugin '{plugin.name}' is already installed: replacing "
                    f"{old['version']} ({before.previous_hash}) with {plugin.manifest.version} "
                    f"({source_hash(plugin.source)}) would change the code {affected} run; "
                    "install with --upgrade to replace it"
                )
        params = {
            "name": plugin.name,
            "version": plugin.manifest.version,
            "manifest": Jsonb(plugin.manifest.raw),
            "source": plugin.source,
            "tasks": Jsonb(plugin_tasks_json(plugin)),
        }
        row = _row(conn, "upsert_plugin", params)
        assert row is not None
        plugin_id = int(row["id"])
        config_ids = tuple(
            int(r["id"]) for r in _rows(conn, "plugin_config_ids", {"plugin_id": plugin_id})
        )
        if config_ids:
            sync_tasks(conn, config_ids)
    if old is None:
        return Installed(plugin_id=plugin_id, plugin=plugin)
    return replace(before, plugin_id=plugin_id, config_ids=config_ids)


def install_plugin(conn: Conn, plugin: Plugin) -> int:
    """Install `plugin`, or replace the installed plugin of that name (as `install` with
    `upgrade`, for programs and tests); returns its id."""
    return install(conn, plugin, upgrade=True).plugin_id


def get_plugin(conn: Conn, name: str) -> Plugin:
    """The installed plugin `name` (manifest and source), or NotFound."""
    row = _row(conn, "get_plugin_code_by_name", {"name": name})
    if row is None:
        raise NotFound(f"no plugin named '{name}' is installed")
    return plugin_from_stored(row["manifest"], row["source"])


def list_plugins(conn: Conn) -> list[dict[str, Any]]:
    """Installed plugins: id, name, version, tasks, configs (count), installed_at, updated_at."""
    return _rows(conn, "list_plugins")


def remove_plugin(conn: Conn, name: str, *, force: bool = False) -> int:
    """Uninstall a plugin. Refused while it has configs, unless `force` (which deletes them);
    returns the number of configs deleted."""
    with conn.transaction():
        plugin = _plugin_row(conn, name)
        config_ids = [
            int(r["id"]) for r in _rows(conn, "plugin_config_ids", {"plugin_id": plugin["id"]})
        ]
        if config_ids and not force:
            ids = ", ".join(str(i) for i in config_ids[:10]) + (
                ", ..." if len(config_ids) > 10 else ""
            )
            raise StoreError(
                f"plugin '{name}' has {len(config_ids)} config(s) (id {ids}); "
                "delete them first, or remove with --force"
            )
        _count(conn, "delete_plugin", {"id": plugin["id"]})
    return len(config_ids)


# -- settings -----------------------------------------------------------------------------------


def coerce_setting(key: str, spec: ConfigField, value: Any) -> Any:
    """`value` as the type `spec` declares. Strings (from the command line) are converted;
    other values must already have the type. Messages never include the value."""
    kind = spec.type
    if kind == "string":
        if not isinstance(value, str):
            raise ConfigError(f"setting '{key}': must be a string", key)
        return value
    if isinstance(value, str):
        text = value.strip()
        if kind == "integer":
            try:
                return int(text)
            except ValueError:
                raise ConfigError(f"setting '{key}': must be an integer", key) from None
        if kind == "number":
            try:
                number: float | int = int(text)
            except ValueError:
                try:
                    number = float(text)
                except ValueError:
                    raise ConfigError(f"setting '{key}': must be a number", key) from None
            if not math.isfinite(number):
                raise ConfigError(f"setting '{key}': must be a finite number", key)
            return number
        if kind == "boolean":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ConfigError(f"setting '{key}': must be true or false", key)
        if kind == "json":
            try:
                return loads_bounded(text, f"setting '{key}'")
            except ValueError as exc:
                if json_depth(text) > MAX_JSON_DEPTH:
                    raise ConfigError(str(exc), key) from None
                raise ConfigError(f"setting '{key}': must be valid JSON", key) from None
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"setting '{key}': must be an integer", key)
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"setting '{key}': must be an integer", key)
        return int(value)
    if kind == "number":
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ConfigError(f"setting '{key}': must be a number", key)
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ConfigError(f"setting '{key}': must be true or false", key)
        return value
    if kind == "json":
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise ConfigError(f"setting '{key}': must be a JSON value", key) from None
        return value
    raise ConfigError(f"setting '{key}': unknown type '{kind}' in config_schema", key)


def validate_settings(
    manifest: Manifest, settings: Mapping[str, Any], *, current: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The settings to store: `current` (already valid) updated with `settings`, each converted
    to its declared type, with the schema's defaults filled in. Refuses unknown keys and missing
    required settings with a `ConfigError` naming the key."""
    schema = manifest.config_schema
    result: dict[str, Any] = dict(current or {})
    for key, value in settings.items():
        spec = schema.get(key)
        if spec is None:
            known = ", ".join(sorted(schema)) or "none"
            raise ConfigError(
                f"unknown setting '{key}' for plugin '{manifest.name}' (known: {known})", key
            )
        result[key] = coerce_setting(key, spec, value)
    for key, spec in schema.items():
        if key in result:
            continue
        if spec.default is not None:
            result[key] = spec.default
        elif spec.required:
            raise ConfigError(f"missing required setting '{key}' for plugin '{manifest.name}'", key)
    return result


# -- configs ------------------------------------------------------------------------------------


def valid_time_zone(name: str | None) -> str | None:
    """`name` (an IANA time zone name) if it can be used, None for None or "" (no zone of the
    config's own: the plugin's declared zone applies, else UTC); ConfigError otherwise."""
    if name is None or name == "":
        return None
    try:
        return check_time_zone(name)
    except TimeZoneError as exc:
        raise ConfigError(f"time zone {exc}", "time_zone") from None


def create_config(
    conn: Conn,
    plugin_name: str,
    settings: Mapping[str, Any],
    enabled: bool = True,
    time_zone: str | None = None,
) -> int:
    """A new config of an installed plugin, with its tasks; returns its id. `time_zone`: the
    IANA zone its daily and cron tasks are computed in (None: the plugin's, else UTC)."""
    zone = valid_time_zone(time_zone)
    with conn.transaction():
        plugin = _plugin_row(conn, plugin_name)
        valid = validate_settings(parse_manifest(plugin["manifest"]), settings)
        row = _row(
            conn,
            "insert_config",
            {
                "plugin_id": plugin["id"],
                "settings": Jsonb(valid),
                "enabled": enabled,
                "time_zone": zone,
            },
        )
        assert row is not None
        config_id = int(row["id"])
        sync_tasks(conn, [config_id])
    return config_id


def list_configs(conn: Conn) -> list[dict[str, Any]]:
    """Every config, oldest first, with secret settings masked as "***"."""
    return _rows(conn, "list_configs", {"id": None})


def config_secrets(conn: Conn, config_ids: Sequence[int]) -> dict[int, list[str]]:
    """The secret texts of each config (see runtime.text.secret_values), to mask what its
    runs printed. Configs that no longer exist are left out."""
    out: dict[int, list[str]] = {}
    for row in _rows(conn, "config_secret_settings", {"ids": list(config_ids)}):
        schema = row["config_schema"] if isinstance(row["config_schema"], dict) else {}
        secret = {k: bool(isinstance(v, dict) and v.get("secret")) for k, v in schema.items()}
        out[int(row["id"])] = secret_values(secret, row["settings"] or {})
    return out


def get_config(conn: Conn, config_id: int) -> dict[str, Any]:
    """One config, as `list_configs` shows it (secrets masked)."""
    row = _row(conn, "list_configs", {"id": config_id})
    if row is None:
        raise NotFound(f"no config with id {config_id}")
    return row


def set_enabled(conn: Conn, config_id: int, enabled: bool) -> None:
    """Enable or disable a config; enabling also releases it from quarantine."""
    if _row(conn, "set_config_enabled", {"id": config_id, "enabled": enabled}) is None:
        raise NotFound(f"no config with id {config_id}")


def update_settings(conn: Conn, config_id: int, changes: Mapping[str, Any]) -> None:
    """Change some settings of a config (validated like `create_config`)."""
    with conn.transaction():
        row = _row(conn, "get_config_for_update", {"id": config_id})
        if row is None:
            raise NotFound(f"no config with id {config_id}")
        manifest = parse_manifest(row["manifest"])
        valid = validate_settings(manifest, changes, current=row["settings"])
        _row(conn, "set_config_settings", {"id": config_id, "settings": Jsonb(valid)})


def set_time_zone(conn: Conn, config_id: int, time_zone: str | None) -> None:
    """Set the time zone of a config (None or "": none of its own, the plugin's applies) and
    re-initialise its daily and cron tasks whose zone changes (sync_tasks)."""
    zone = valid_time_zone(time_zone)
    with conn.transaction():
        if _row(conn, "set_config_time_zone", {"id": config_id, "time_zone": zone}) is None:
            raise NotFound(f"no config with id {config_id}")
        sync_tasks(conn, [config_id])


def delete_config(conn: Conn, config_id: int) -> None:
    """Delete a config, its tasks and its storage (its runs and logs stay, for the record)."""
    if _row(conn, "delete_config", {"id": config_id}) is None:
        raise NotFound(f"no config with id {config_id}")


# -- tasks --------------------------------------------------------------------------------------


# In this order: a changed task is updated, not deleted and inserted again.
SYNC_TASKS_STATEMENTS = ("sync_tasks_delete", "sync_tasks_update", "sync_tasks_insert")


def sync_tasks(conn: Conn, config_ids: Sequence[int] | None = None) -> dict[str, int]:
    """Make the `tasks` rows of the given configs (None: all) match their plugin's tasks: delete
    the ones no longer scheduled, update changed schedules (next_slot back to NULL), insert the
    missing ones (next_slot NULL: a scheduler node initialises them). One statement each."""
    params = {"config_ids": list(config_ids) if config_ids is not None else None}
    with conn.transaction():
        deleted, updated, inserted = (_count(conn, name, params) for name in SYNC_TASKS_STATEMENTS)
    return {"deleted": deleted, "updated": updated, "inserted": inserted}


def trigger(conn: Conn, config_id: int, task: str) -> int:
    """Queue a manual run of `task` of config `config_id` now; returns the run id. Nodes hear of
    it through NOTIFY on `plugin_runtime_trigger` (payload: the run id)."""
    row = _row(conn, "trigger_run", {"config_id": config_id, "task": task})
    if row is not None:
        return int(row["id"])
    config = _row(conn, "config_tasks", {"config_id": config_id})
    if config is None:
        raise NotFound(f"no config with id {config_id}")
    tasks = ", ".join(config["tasks"]) or "none"
    raise NotFound(
        f"config {config_id} (plugin '{config['plugin']}') has no task '{task}' (tasks: {tasks})"
    )


# -- runs ---------------------------------------------------------------------------------------


# Every outcome a run can be recorded with, and every cadence (the one vocabulary: sandbox/).
RUN_OUTCOMES: tuple[str, ...] = tuple(outcome.value for outcome in Outcome)
CADENCES: tuple[str, ...] = tuple(cadence.value for cadence in Cadence)
RESULT_PREVIEW_CHARS = 2000
RUN_LOG_LINES = 1000


def list_runs(
    conn: Conn,
    config_id: int | None = None,
    task: str | None = None,
    outcome: str | None = None,
    limit: int = 50,
    cadence: str | None = None,
) -> list[dict[str, Any]]:
    """Runs, newest first, optionally only of one config, task, outcome or cadence."""
    if limit < 1:
        raise StoreError("limit must be at least 1")
    if outcome is not None and outcome not in RUN_OUTCOMES:
        raise StoreError(f"unknown outcome '{outcome}' (known: {', '.join(RUN_OUTCOMES)})")
    if cadence is not None and cadence not in CADENCES:
        raise StoreError(f"unknown cadence '{cadence}' (known: {', '.join(CADENCES)})")
    params = {
        "config_id": config_id,
        "task": task,
        "outcome": outcome,
        "cadence": cadence,
        "limit": limit,
    }
    return _rows(conn, "list_runs", params)


def get_run(conn: Conn, run_id: int) -> dict[str, Any]:
    """Everything about one run: config, plugin, task, slot, attempt, node, timings (and start
    lag), outcome, error with traceback, its log lines (`logs`, oldest first, at most
    RUN_LOG_LINES) and a preview of its result (`result_preview`, at most RESULT_PREVIEW_CHARS
    of JSON)."""
    run = _row(conn, "run_detail", {"run_id": run_id})
    if run is None:
        raise NotFound(f"no run with id {run_id}")
    run["logs"] = _rows(conn, "run_log_lines", {"run_id": run_id, "limit": RUN_LOG_LINES})
    result = run.pop("result")
    preview = None if result is None else json.dumps(result, ensure_ascii=False)
    if preview is not None and len(preview) > RESULT_PREVIEW_CHARS:
        preview = preview[:RESULT_PREVIEW_CHARS] + f"… ({len(preview)} characters)"
    run["result_preview"] = preview
    return run
