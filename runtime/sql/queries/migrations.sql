-- name: migrations_lock
-- Session-level advisory lock: one migrator at a time, whatever the number of processes.
SELECT pg_advisory_lock(%(key)s::bigint);

-- name: migrations_unlock
SELECT pg_advisory_unlock(%(key)s::bigint);

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
SELECT set_config('search_path', %(search_path)s, false);
