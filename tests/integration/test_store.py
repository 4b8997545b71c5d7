"""runtime.store against a real PostgreSQL, and the named-query loader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from runtime import store
from runtime.queries import QueryError, load_queries, parse_queries, query
from sandbox.manifest import Plugin, load_plugin, parse_manifest

Conn = psycopg.Connection[Any]
SECRET = "s3cr3t-value-never-shown"


@pytest.fixture
def tiny(test_plugins_dir: Path) -> Plugin:
    return load_plugin(test_plugins_dir / "tiny")


@pytest.fixture
def tiny_copy(tmp_path: Path, test_plugins_dir: Path) -> Path:
    """A copy of the tiny plugin that a test may edit (to install a new version)."""
    target = tmp_path / "tiny"
    shutil.copytree(test_plugins_dir / "tiny", target)
    return target


def _edit(plugin_dir: Path, *, version: str, schedules: dict[str, str], source: str) -> Plugin:
    manifest = json.loads((plugin_dir / "plugin.json").read_text())
    manifest["version"] = version
    manifest["schedules"] = schedules
    (plugin_dir / "plugin.json").write_text(json.dumps(manifest))
    (plugin_dir / "main.py").write_text(source)
    return load_plugin(plugin_dir)


def _tasks(db: Conn, config_id: int) -> dict[str, dict[str, Any]]:
    rows = db.execute(
        "SELECT name, cadence, cron, next_slot FROM plugin_runtime.tasks WHERE config_id = %s",
        [config_id],
    ).fetchall()
    return {row["name"]: row for row in rows}


# -- named queries ------------------------------------------------------------------------------


def test_parse_queries_drops_doc_comments_and_splits_on_names() -> None:
    text = "-- file header\n\n-- name: one\n-- what it does\nSELECT 1;\n\n-- name: two\nSELECT %(x)s;\n"
    assert parse_queries(text) == {"one": "SELECT 1;", "two": "SELECT %(x)s;"}


def test_parse_queries_refuses_duplicates_and_stray_sql() -> None:
    with pytest.raises(QueryError, match="defined twice"):
        parse_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")
    with pytest.raises(QueryError, match="before the first"):
        parse_queries("SELECT 1;\n-- name: a\nSELECT 2;\n")


def test_every_shipped_query_loads_and_unknown_names_are_clear() -> None:
    queries = load_queries()
    assert "list_configs" in queries and "migrations_lock" in queries
    with pytest.raises(QueryError, match="no query named 'nope'"):
        query("nope")


# -- plugins ------------------------------------------------------------------------------------


def test_install_list_and_reinstall_updates_in_place(
    db: Conn, tiny: Plugin, tiny_copy: Path
) -> None:
    plugin_id = store.install_plugin(db, tiny)
    [row] = store.list_plugins(db)
    assert row["id"] == plugin_id and row["name"] == "tiny" and row["version"] == "1.0.0"
    assert row["tasks"] == [
        {"name": "run_every_hour", "cadence": "hour", "cron": "0 * * * *"},
        {"name": "run_every_minute", "cadence": "minute", "cron": "* * * * *"},
    ]
    assert row["configs"] == 0

    newer = _edit(
        tiny_copy, version="1.1.0", schedules={}, source="def run_every_day(meta):\n    return 1\n"
    )
    assert store.install_plugin(db, newer) == plugin_id
    [row] = store.list_plugins(db)
    assert row["version"] == "1.1.0"
    assert [t["name"] for t in row["tasks"]] == ["run_every_day"]
    stored = db.execute("SELECT manifest, source FROM plugin_runtime.plugins").fetchone()
    assert stored is not None
    assert parse_manifest(stored["manifest"]).version == "1.1.0"
    assert "run_every_day" in stored["source"]


def test_remove_plugin_refused_while_configs_exist_unless_forced(db: Conn, tiny: Plugin) -> None:
    store.install_plugin(db, tiny)
    config_id = store.create_config(db, "tiny", {"api_key": SECRET})
    with pytest.raises(store.StoreError, match=f"has 1 config.*id {config_id}.*--force"):
        store.remove_plugin(db, "tiny")
    assert len(store.list_plugins(db)) == 1
    assert store.remove_plugin(db, "tiny", force=True) == 1
    assert store.list_plugins(db) == [] and store.list_configs(db) == []
    assert _tasks(db, config_id) == {}
    with pytest.raises(store.NotFound, match="no plugin named 'tiny'"):
        store.remove_plugin(db, "tiny")


# -- settings -----------------------------------------------------------------------------------


def test_validate_settings_coerces_command_line_strings(tiny: Plugin) -> None:
    settings = store.validate_settings(
        tiny.manifest,
        {
            "api_key": "k",
            "batch_size": "25",
            "ratio": "0.5",
            "verbose": "yes",
            "extra": '{"a": [1]}',
        },
    )
    assert settings == {
        "api_key": "k",
        "batch_size": 25,
        "ratio": 0.5,
        "verbose": True,
        "extra": {"a": [1]},
        "greeting": "hello",  # the schema's default is filled in
    }
    typed = store.validate_settings(
        tiny.manifest, {"api_key": "k", "batch_size": 3.0, "verbose": False}
    )
    assert typed["batch_size"] == 3 and typed["verbose"] is False


@pytest.mark.parametrize(
    ("settings", "key", "message"),
    [
        ({}, "api_key", "missing required setting 'api_key'"),
        ({"api_key": "k", "colour": "red"}, "colour", "unknown setting 'colour'"),
        ({"api_key": "k", "batch_size": "ten"}, "batch_size", "must be an integer"),
        ({"api_key": "k", "batch_size": True}, "batch_size", "must be an integer"),
        ({"api_key": "k", "ratio": "nan"}, "ratio", "finite"),
        ({"api_key": "k", "verbose": "maybe"}, "verbose", "true or false"),
        ({"api_key": "k", "extra": "{not json"}, "extra", "valid JSON"),
        ({"api_key": 12}, "api_key", "must be a string"),
    ],
)
def test_validate_settings_refuses_with_the_key_named(
    tiny: Plugin, settings: dict[str, Any], key: str, message: str
) -> None:
    with pytest.raises(store.ConfigError, match=message) as caught:
        store.validate_settings(tiny.manifest, settings)
    assert caught.value.key == key


def test_config_errors_never_repeat_a_value(tiny: Plugin) -> None:
    with pytest.raises(store.ConfigError) as caught:
        store.validate_settings(tiny.manifest, {"api_key": 123456789})
    assert "123456789" not in str(caught.value)


# -- configs ------------------------------------------------------------------------------------


def test_create_config_stores_typed_settings_and_its_tasks(db: Conn, tiny: Plugin) -> None:
    store.install_plugin(db, tiny)
    config_id = store.create_config(
        db, "tiny", {"api_key": SECRET, "batch_size": "7"}, enabled=False
    )
    raw = db.execute(
        "SELECT settings, enabled FROM plugin_runtime.plugin_configs WHERE id = %s", [config_id]
    ).fetchone()
    assert raw == {
        "settings": {"api_key": SECRET, "batch_size": 7, "greeting": "hello"},
        "enabled": False,
    }
    tasks = _tasks(db, config_id)
    assert set(tasks) == {"run_every_minute", "run_every_hour"}
    assert all(t["next_slot"] is None for t in tasks.values())  # a scheduler node initialises them
    assert tasks["run_every_hour"]["cadence"] == "hour"


def test_create_config_refuses_unknown_plugin_and_bad_settings(db: Conn, tiny: Plugin) -> None:
    with pytest.raises(store.NotFound, match="no plugin named 'tiny'"):
        store.create_config(db, "tiny", {"api_key": "k"})
    store.install_plugin(db, tiny)
    with pytest.raises(store.ConfigError, match="api_key"):
        store.create_config(db, "tiny", {"greeting": "hi"})
    assert store.list_configs(db) == []


def test_listing_masks_secrets(db: Conn, tiny: Plugin) -> None:
    store.install_plugin(db, tiny)
    config_id = store.create_config(db, "tiny", {"api_key": SECRET, "greeting": "hi"})
    [listed] = store.list_configs(db)
    assert listed["settings"] == {"api_key": store.SECRET_MASK, "greeting": "hi"}
    assert listed["plugin"] == "tiny" and listed["tasks"] == ["run_every_hour", "run_every_minute"]
    assert SECRET not in json.dumps(listed, default=str)
    assert store.get_config(db, config_id)["settings"]["api_key"] == store.SECRET_MASK


def test_enable_releases_quarantine_and_disable_keeps_it(db: Conn, tiny: Plugin) -> None:
    store.install_plugin(db, tiny)
    config_id = store.create_config(db, "tiny", {"api_key": "k"})
    quarantine = (
        "UPDATE plugin_runtime.plugin_configs SET enabled = false, quarantined_at = now(),"
        " quarantine_reason = '5 timeouts in a row', consecutive_failures = 5 WHERE id = %s"
    )
    db.execute(quarantine, [config_id])
    store.set_enabled(db, config_id, False)
    row = store.get_config(db, config_id)
    assert row["quarantined_at"] is not None and row["consecutive_failures"] == 5

    store.set_enabled(db, config_id, True)
    row = store.get_config(db, config_id)
    assert row["enabled"] is True
    assert row["quarantined_at"] is None and row["quarantine_reason"] is None
    assert row["consecutive_failures"] == 0
    with pytest.raises(store.NotFound, match="no config with id 999"):
        store.set_enabled(db, 999, True)


def test_update_settings_validates_the_changes_and_keeps_the_rest(db: Conn, tiny: Plugin) -> None:
    store.install_plugin(db, tiny)
    config_id = store.create_config(db, "tiny", {"api_key": SECRET, "extra": '"a json string"'})
    store.update_settings(db, config_id, {"batch_size": "9"})
    raw = db.execute(
        "SELECT settings FROM plugin_runtime.plugin_configs WHERE id = %s", [config_id]
    ).fetchone()
    assert raw is not None
    assert raw["settings"] == {
        "api_key": SECRET,
        "extra": "a json string",
        "batch_size": 9,
        "greeting": "hello",
    }
    with pytest.raises(store.ConfigError, match="unknown setting 'nope'"):
        store.update_settings(db, config_id, {"nope": "1"})
    with pytest.raises(store.NotFound):
        store.update_settings(db, 999, {"batch_size": "1"})


def test_delete_config_removes_it_and_its_tasks(db: Conn, tiny: Plugin) -> None:
    store.install_plugin(db, tiny)
    config_id = store.create_config(db, "tiny", {"api_key": "k"})
    store.delete_config(db, config_id)
    assert store.list_configs(db) == [] and _tasks(db, config_id) == {}
    with pytest.raises(store.NotFound):
        store.delete_config(db, config_id)


# -- tasks --------------------------------------------------------------------------------------


def test_sync_tasks_follows_a_plugin_update(db: Conn, tiny: Plugin, tiny_copy: Path) -> None:
    store.install_plugin(db, tiny)
    ids = [store.create_config(db, "tiny", {"api_key": str(i)}) for i in range(3)]
    db.execute("UPDATE plugin_runtime.tasks SET next_slot = '2026-01-01T00:00:00Z'")

    # v2: drops run_every_hour, keeps run_every_minute, adds a cron task.
    v2 = _edit(
        tiny_copy,
        version="2.0.0",
        schedules={"nightly": "30 2 * * *"},
        source="def run_every_minute(meta):\n    pass\n\ndef nightly(meta):\n    pass\n",
    )
    store.install_plugin(db, v2)
    for config_id in ids:
        tasks = _tasks(db, config_id)
        assert set(tasks) == {"run_every_minute", "nightly"}
        assert tasks["run_every_minute"]["next_slot"] is not None  # unchanged: kept its place
        assert tasks["nightly"]["cadence"] == "cron" and tasks["nightly"]["cron"] == "30 2 * * *"
        assert tasks["nightly"]["next_slot"] is None

    db.execute("UPDATE plugin_runtime.tasks SET next_slot = '2026-01-01T00:00:00Z'")
    # v3: the cron task's schedule changes: its row is updated and must be re-initialised.
    v3 = _edit(
        tiny_copy,
        version="3.0.0",
        schedules={"nightly": "45 3 * * *"},
        source="def run_every_minute(meta):\n    pass\n\ndef nightly(meta):\n    pass\n",
    )
    store.install_plugin(db, v3)
    for config_id in ids:
        tasks = _tasks(db, config_id)
        assert tasks["nightly"]["cron"] == "45 3 * * *" and tasks["nightly"]["next_slot"] is None
        assert tasks["run_every_minute"]["next_slot"] is not None

    # Nothing left to do: a second sync changes nothing.
    assert store.sync_tasks(db) == {"deleted": 0, "updated": 0, "inserted": 0}


def test_sync_tasks_repairs_only_the_configs_asked_for(db: Conn, tiny: Plugin) -> None:
    store.install_plugin(db, tiny)
    first = store.create_config(db, "tiny", {"api_key": "a"})
    second = store.create_config(db, "tiny", {"api_key": "b"})
    db.execute("DELETE FROM plugin_runtime.tasks")
    assert store.sync_tasks(db, [first]) == {"deleted": 0, "updated": 0, "inserted": 2}
    assert len(_tasks(db, first)) == 2 and _tasks(db, second) == {}
    assert store.sync_tasks(db) == {"deleted": 0, "updated": 0, "inserted": 2}


# -- trigger and runs ---------------------------------------------------------------------------


def test_trigger_queues_a_manual_run_and_notifies(
    db: Conn, database_url: str, tiny: Plugin
) -> None:
    store.install_plugin(db, tiny)
    config_id = store.create_config(db, "tiny", {"api_key": "k"})
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN plugin_runtime_trigger")
        run_id = store.trigger(db, config_id, "run_every_hour")
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert payloads == [str(run_id)]
    run = db.execute("SELECT * FROM plugin_runtime.runs WHERE id = %s", [run_id]).fetchone()
    assert run is not None
    assert (run["state"], run["manual"], run["task"], run["config_id"]) == (
        "queued",
        True,
        "run_every_hour",
        config_id,
    )
    task_id = _tasks_ids(db, config_id)["run_every_hour"]
    assert run["task_id"] == task_id
    assert run["slot"] is not None and run["outcome"] is None


def _tasks_ids(db: Conn, config_id: int) -> dict[str, int]:
    rows = db.execute("SELECT id, name FROM plugin_runtime.tasks WHERE config_id = %s", [config_id])
    return {row["name"]: row["id"] for row in rows}


def test_trigger_refuses_unknown_config_or_task(db: Conn, tiny: Plugin) -> None:
    store.install_plugin(db, tiny)
    config_id = store.create_config(db, "tiny", {"api_key": "k"})
    with pytest.raises(store.NotFound, match="no config with id 999"):
        store.trigger(db, 999, "run_every_hour")
    with pytest.raises(
        store.NotFound, match="no task 'run_every_day'.*run_every_hour, run_every_minute"
    ):
        store.trigger(db, config_id, "run_every_day")
    assert store.list_runs(db) == []


def test_list_runs_newest_first_with_filters(db: Conn, tiny: Plugin) -> None:
    store.install_plugin(db, tiny)
    a = store.create_config(db, "tiny", {"api_key": "a"})
    b = store.create_config(db, "tiny", {"api_key": "b"})
    r1 = store.trigger(db, a, "run_every_minute")
    r2 = store.trigger(db, a, "run_every_hour")
    r3 = store.trigger(db, b, "run_every_minute")
    db.execute("UPDATE plugin_runtime.runs SET state = 'done', outcome = 'ok' WHERE id = %s", [r1])
    db.execute(
        "UPDATE plugin_runtime.runs SET state = 'done', outcome = 'timeout' WHERE id = %s", [r3]
    )

    assert [r["id"] for r in store.list_runs(db)] == [r3, r2, r1]
    assert [r["id"] for r in store.list_runs(db, config_id=a)] == [r2, r1]
    assert [r["id"] for r in store.list_runs(db, task="run_every_minute")] == [r3, r1]
    assert [r["id"] for r in store.list_runs(db, outcome="timeout")] == [r3]
    assert [r["id"] for r in store.list_runs(db, limit=1)] == [r3]
    assert store.list_runs(db)[0]["plugin"] == "tiny"
    with pytest.raises(store.StoreError, match="limit"):
        store.list_runs(db, limit=0)
