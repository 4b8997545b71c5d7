-- name: migrations_lock
-- One migrator at a time, whatever the number of processes; released at the end of the
-- transaction (never a session lock: a pooler in transaction mode would strand it).
SELECT pg_advisory_xact_lock(%(key)s::bigint);

-- name: migrations_bootstrap
-- The bookkeeping table must exist before the first migration runs.
CREATE SCHEMA IF NOT EXISTS plugin_runtime;
CREATE TABLE IF NOT EXISTS plugin_runtime.schema_migrations (
    version    text PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migrations_applied
SELECT version FROM plugin_runtime.schema_migrations ORDER BY version;

-- name: migrations_record
INSERT INTO plugin_runtime.schema_migrations (version, name) VALUES (%(version)s, %(name)s);

-- name: migrations_get_search_path
SELECT current_setting('search_path') AS search_path;

-- name: migrations_set_search_path
-- Session scope on purpose: undoes a migration's session-level SET within its transaction.
SELECT set_config('search_path', %(search_path)s, false);
