-- Statements of the benchmark harness itself (never counted: the harness connects with
-- log_statement = none). Loaded by name through bench/common.py.

-- name: create_configs
-- `count` configs of one plugin in one statement.
INSERT INTO plugin_runtime.plugin_configs (plugin_id, settings)
SELECT %(plugin_id)s, '{}'::jsonb FROM generate_series(1, %(count)s);

-- name: plugin_id
SELECT id FROM plugin_runtime.plugins WHERE name = %(name)s;

-- name: keep_minute_tasks_only
DELETE FROM plugin_runtime.tasks WHERE name <> 'run_every_minute';

-- name: analyze_tables
-- Planner statistics for the tables just filled, as autovacuum takes them within its naptime
-- (a minute) on a real server: without them a benchmark shorter than that measures the plans
-- of an empty database (the claim's nested loop over every task for every config).
ANALYZE plugin_runtime.plugins, plugin_runtime.plugin_configs, plugin_runtime.tasks;

-- name: done_runs
SELECT count(*) AS n FROM plugin_runtime.runs WHERE state = 'done' AND NOT manual;

-- name: uninitialised_tasks
SELECT count(*) AS n FROM plugin_runtime.tasks WHERE next_slot IS NULL;

-- name: run_lags
-- Start lag of every first-attempt, non-backfilled scheduled run, in scheduler seconds, with
-- its plugin's name and whether the run started inside its minute.
SELECT p.name AS plugin, r.slot, r.outcome,
       extract(epoch FROM r.started_at - (r.slot + make_interval(secs => t.offset_s))) AS lag_s,
       r.started_at < r.slot + interval '1 minute' AS in_minute
  FROM plugin_runtime.runs r
  JOIN plugin_runtime.tasks t ON t.id = r.task_id
  JOIN plugin_runtime.plugin_configs c ON c.id = r.config_id
  JOIN plugin_runtime.plugins p ON p.id = c.plugin_id
 WHERE NOT r.manual AND r.attempt = 1 AND NOT r.backfilled AND r.started_at IS NOT NULL
   AND r.slot >= %(from_slot)s AND r.slot < %(to_slot)s;

-- name: slot_counts
-- Per minute slot: how many tasks were due and how many runs of it started.
SELECT r.slot, count(*) AS runs, count(*) FILTER (WHERE r.started_at < r.slot + interval '1 minute') AS in_minute
  FROM plugin_runtime.runs r
 WHERE NOT r.manual AND r.slot >= %(from_slot)s AND r.slot < %(to_slot)s
 GROUP BY r.slot ORDER BY r.slot;

-- name: active_tasks
SELECT count(*) AS n FROM plugin_runtime.tasks;

-- name: graphile_add_jobs
-- Graphile Worker's own bulk enqueue (graphile_worker.add_jobs, 0.16): `count` no-op jobs.
SELECT count(*) AS n FROM graphile_worker.add_jobs(
    array(SELECT ('noop', '{}'::json, NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec
            FROM generate_series(1, %(count)s)));

-- name: graphile_jobs_left
SELECT count(*) AS n FROM graphile_worker.jobs;

-- name: backend_pids
-- The server processes serving the benchmark database (the node's connections), for their CPU.
SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid();
