-- Admin statements: plugins, plugin configs, tasks sync, manual triggers, run listing.
-- Used by runtime/store.py (the CLI's `plugins`, `configs`, `trigger` and `runs` commands).

-- name: upsert_plugin
-- Install a plugin, or replace the stored version of a plugin with the same name.
INSERT INTO plugin_runtime.plugins (name, version, manifest, source, tasks)
VALUES (%(name)s, %(version)s, %(manifest)s, %(source)s, %(tasks)s)
ON CONFLICT (name) DO UPDATE
   SET version    = EXCLUDED.version,
       manifest   = EXCLUDED.manifest,
       source     = EXCLUDED.source,
       tasks      = EXCLUDED.tasks,
       updated_at = now()
RETURNING id;

-- name: plugin_config_ids
SELECT c.id
  FROM plugin_runtime.plugin_configs c
 WHERE c.plugin_id = %(plugin_id)s
 ORDER BY c.id;

-- name: list_plugins
SELECT p.id, p.name, p.version, p.tasks, p.installed_at, p.updated_at,
       (SELECT count(*) FROM plugin_runtime.plugin_configs c WHERE c.plugin_id = p.id) AS configs
  FROM plugin_runtime.plugins p
 ORDER BY p.name;

-- name: get_plugin_code_by_name
SELECT p.manifest, p.source FROM plugin_runtime.plugins p WHERE p.name = %(name)s;

-- name: get_plugin_by_name
SELECT p.id, p.name, p.version, p.manifest, p.tasks
  FROM plugin_runtime.plugins p
 WHERE p.name = %(name)s;

-- name: get_plugin_for_install
-- The installed version of a plugin, locked: two installs of one name are serialised.
SELECT p.id, p.version, p.manifest, p.source
  FROM plugin_runtime.plugins p
 WHERE p.name = %(name)s
   FOR UPDATE;

-- name: delete_plugin
DELETE FROM plugin_runtime.plugins WHERE id = %(id)s;

-- name: insert_config
INSERT INTO plugin_runtime.plugin_configs (plugin_id, settings, enabled, time_zone)
VALUES (%(plugin_id)s, %(settings)s, %(enabled)s, %(time_zone)s)
RETURNING id;

-- name: list_configs
-- Secret settings (config_schema.KEY.secret = true) are masked here, in the database: their
-- values never reach the CLI. So is a stored setting the schema no longer declares (nothing
-- says it is safe to show). `id` NULL lists every config.
SELECT c.id, c.plugin_id, p.name AS plugin, p.version, c.enabled,
       c.quarantined_at, c.quarantine_reason, c.consecutive_failures,
       COALESCE((SELECT jsonb_object_agg(
                            s.key,
                            CASE WHEN p.manifest #> ARRAY['config_schema', s.key, 'secret'] = 'true'::jsonb
                                   OR NOT COALESCE(p.manifest -> 'config_schema', '{}'::jsonb) ? s.key
                                 THEN '"***"'::jsonb ELSE s.value END)
                   FROM jsonb_each(c.settings) s), '{}'::jsonb) AS settings,
       COALESCE((SELECT jsonb_agg(t.name ORDER BY t.name)
                   FROM plugin_runtime.tasks t WHERE t.config_id = c.id), '[]'::jsonb) AS tasks,
       c.time_zone, p.manifest ->> 'time_zone' AS plugin_time_zone,
       c.created_at, c.updated_at
  FROM plugin_runtime.plugin_configs c
  JOIN plugin_runtime.plugins p ON p.id = c.plugin_id
 WHERE %(id)s::bigint IS NULL OR c.id = %(id)s::bigint
 ORDER BY c.id;

-- name: config_secret_settings
-- Raw settings and the schema, to mask secret values in what runs printed; internal use only.
SELECT c.id, c.settings, p.manifest -> 'config_schema' AS config_schema
  FROM plugin_runtime.plugin_configs c
  JOIN plugin_runtime.plugins p ON p.id = c.plugin_id
 WHERE c.id = ANY(%(ids)s::bigint[]);

-- name: get_config_for_update
-- Raw (unmasked) settings and the manifest to validate changes against; for internal use only.
SELECT c.id, c.settings, p.manifest, p.name AS plugin
  FROM plugin_runtime.plugin_configs c
  JOIN plugin_runtime.plugins p ON p.id = c.plugin_id
 WHERE c.id = %(id)s
   FOR UPDATE OF c;

-- name: set_config_enabled
-- Enabling also releases a quarantine: the operator has looked at it.
UPDATE plugin_runtime.plugin_configs
   SET enabled              = %(enabled)s,
       quarantined_at       = CASE WHEN %(enabled)s THEN NULL ELSE quarantined_at END,
       quarantine_reason    = CASE WHEN %(enabled)s THEN NULL ELSE quarantine_reason END,
       consecutive_failures = CASE WHEN %(enabled)s THEN 0 ELSE consecutive_failures END,
       updated_at           = now()
 WHERE id = %(id)s
RETURNING id;

-- name: set_config_time_zone
-- NULL: the plugin's declared zone, else UTC. The notify trigger tells every node.
UPDATE plugin_runtime.plugin_configs
   SET time_zone = %(time_zone)s, updated_at = now()
 WHERE id = %(id)s
RETURNING id;

-- name: set_config_settings
UPDATE plugin_runtime.plugin_configs
   SET settings = %(settings)s, updated_at = now()
 WHERE id = %(id)s
RETURNING id;

-- name: delete_config
DELETE FROM plugin_runtime.plugin_configs WHERE id = %(id)s RETURNING id;

-- name: sync_tasks_delete
-- Tasks whose function the plugin no longer schedules. config_ids NULL: every config.
DELETE FROM plugin_runtime.tasks t
 USING plugin_runtime.plugin_configs c
  JOIN plugin_runtime.plugins p ON p.id = c.plugin_id
 WHERE t.config_id = c.id
   AND (%(config_ids)s::bigint[] IS NULL OR c.id = ANY (%(config_ids)s::bigint[]))
   AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(p.tasks) e WHERE e ->> 'name' = t.name);

-- name: sync_tasks_update
-- Tasks whose schedule changed: new cron, cadence or time zone, and next_slot NULL so a node
-- re-initialises it. A task's zone is its config's effective one (the config's, else the
-- plugin's declared `time_zone`, else NULL: UTC) for the cadences computed in a zone (daily and
-- cron: sandbox/manifest.py `Cadence.zoned`), NULL for the others.
UPDATE plugin_runtime.tasks t
   SET cron        = e ->> 'cron',
       cadence     = e ->> 'cadence',
       time_zone   = z.time_zone,
       next_slot   = NULL,
       next_due_at = now(),
       attempt     = 1
  FROM plugin_runtime.plugin_configs c
  JOIN plugin_runtime.plugins p ON p.id = c.plugin_id
 CROSS JOIN LATERAL jsonb_array_elements(p.tasks) e
 CROSS JOIN LATERAL (SELECT CASE WHEN e ->> 'cadence' IN (/*cadences:ZONED*/)
                                 THEN COALESCE(c.time_zone, p.manifest ->> 'time_zone')
                            END AS time_zone) z
 WHERE t.config_id = c.id
   AND e ->> 'name' = t.name
   AND (%(config_ids)s::bigint[] IS NULL OR c.id = ANY (%(config_ids)s::bigint[]))
   AND (t.cron IS DISTINCT FROM e ->> 'cron' OR t.cadence IS DISTINCT FROM e ->> 'cadence'
        OR t.time_zone IS DISTINCT FROM z.time_zone);

-- name: sync_tasks_zones
-- The periodic reconcile's part of sync_tasks_update: tasks whose zone is no longer their
-- config's effective one (a zone changed in psql while no notification was heard), for every
-- config, re-initialised; nothing else of a task is looked at.
UPDATE plugin_runtime.tasks t
   SET time_zone   = z.time_zone,
       next_slot   = NULL,
       next_due_at = now(),
       attempt     = 1
  FROM plugin_runtime.plugin_configs c
  JOIN plugin_runtime.plugins p ON p.id = c.plugin_id
 CROSS JOIN LATERAL (SELECT COALESCE(c.time_zone, p.manifest ->> 'time_zone') AS time_zone) z
 WHERE t.config_id = c.id
   AND t.cadence IN (/*cadences:ZONED*/)
   AND t.time_zone IS DISTINCT FROM z.time_zone;

-- name: sync_tasks_insert
-- Missing tasks, with next_slot NULL: the scheduler node that first sees them initialises them.
-- Their zone as in sync_tasks_update.
INSERT INTO plugin_runtime.tasks (config_id, name, cadence, cron, time_zone)
SELECT c.id, e ->> 'name', e ->> 'cadence', e ->> 'cron',
       CASE WHEN e ->> 'cadence' IN (/*cadences:ZONED*/)
            THEN COALESCE(c.time_zone, p.manifest ->> 'time_zone')
       END
  FROM plugin_runtime.plugin_configs c
  JOIN plugin_runtime.plugins p ON p.id = c.plugin_id
 CROSS JOIN LATERAL jsonb_array_elements(p.tasks) e
 WHERE %(config_ids)s::bigint[] IS NULL OR c.id = ANY (%(config_ids)s::bigint[])
    ON CONFLICT (config_id, name) DO NOTHING;

-- name: analyze_scheduling
-- Planner statistics for the tables the claim joins, after a bulk insert of tasks: until
-- autovacuum's first analyse (up to a minute later) the planner knows nothing of next_due_at
-- and may plan the claim as a nested loop over every due task for each config (seconds per tick
-- at 20,000 configs). Without ownership PostgreSQL skips a table with a warning, not an error.
ANALYZE plugin_runtime.tasks, plugin_runtime.plugin_configs;

-- name: trigger_run
-- A manual run: queued now, and every node is told at once.
WITH target AS (
    SELECT c.id AS config_id, e ->> 'name' AS task, t.id AS task_id
      FROM plugin_runtime.plugin_configs c
      JOIN plugin_runtime.plugins p ON p.id = c.plugin_id
     CROSS JOIN LATERAL jsonb_array_elements(p.tasks) e
      LEFT JOIN plugin_runtime.tasks t ON t.config_id = c.id AND t.name = e ->> 'name'
     WHERE c.id = %(config_id)s AND e ->> 'name' = %(task)s
), inserted AS (
    INSERT INTO plugin_runtime.runs (task_id, config_id, task, slot, manual, state, due_at)
    SELECT task_id, config_id, task, now(), true, 'queued', now() FROM target
    RETURNING id
)
SELECT id, pg_notify('plugin_runtime_trigger', id::text) AS notified FROM inserted;

-- name: config_tasks
-- What a config can run (for error messages): NULL row set when the config does not exist.
SELECT c.id, p.name AS plugin,
       COALESCE((SELECT jsonb_agg(e ->> 'name' ORDER BY e ->> 'name')
                   FROM jsonb_array_elements(p.tasks) e), '[]'::jsonb) AS tasks
  FROM plugin_runtime.plugin_configs c
  JOIN plugin_runtime.plugins p ON p.id = c.plugin_id
 WHERE c.id = %(config_id)s;

-- name: list_runs
-- Newest first, optionally filtered; the plugin name when the config still exists.
SELECT r.id, r.config_id, p.name AS plugin, r.task, t.cadence, r.slot, r.attempt, r.manual,
       r.backfilled, r.node, r.state, r.outcome, r.due_at, r.started_at, r.finished_at,
       r.duration_ms, r.error
  FROM plugin_runtime.runs r
  LEFT JOIN plugin_runtime.tasks t ON t.id = r.task_id
  LEFT JOIN plugin_runtime.plugin_configs c ON c.id = r.config_id
  LEFT JOIN plugin_runtime.plugins p ON p.id = c.plugin_id
 WHERE (%(config_id)s::bigint IS NULL OR r.config_id = %(config_id)s::bigint)
   AND (%(task)s::text IS NULL OR r.task = %(task)s::text)
   AND (%(outcome)s::text IS NULL OR r.outcome = %(outcome)s::text)
   AND (%(cadence)s::text IS NULL OR t.cadence = %(cadence)s::text)
 ORDER BY r.id DESC
 LIMIT %(limit)s;

-- name: run_detail
-- Everything about one run: its config and plugin (when they still exist), its task's cadence
-- and spread offset (for the start lag), timings, outcome, error and result.
SELECT r.id, r.config_id, p.name AS plugin, p.version AS plugin_version, r.task, t.cadence,
       t.cron, t.time_zone, t.offset_s, r.slot, r.attempt, r.manual, r.backfilled, r.node, r.state,
       r.outcome, r.due_at, r.claimed_at, r.started_at, r.finished_at, r.duration_ms,
       EXTRACT(EPOCH FROM r.started_at - (r.slot + make_interval(secs => COALESCE(t.offset_s, 0))))
           AS start_lag_s,
       r.error, r.result, r.created_at,
       c.enabled AS config_enabled, c.quarantined_at AS config_quarantined_at
  FROM plugin_runtime.runs r
  LEFT JOIN plugin_runtime.tasks t ON t.id = r.task_id
  LEFT JOIN plugin_runtime.plugin_configs c ON c.id = r.config_id
  LEFT JOIN plugin_runtime.plugins p ON p.id = c.plugin_id
 WHERE r.id = %(run_id)s;

-- name: run_log_lines
-- The log lines of one run, oldest first (at most %(limit)s).
SELECT l.id, l.ts, l.level, l.message
  FROM plugin_runtime.logs l
 WHERE l.run_id = %(run_id)s
 ORDER BY l.id
 LIMIT %(limit)s;
