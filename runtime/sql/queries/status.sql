-- Read-only statements behind `plugin-runtime status`, `doctor` and /api/status (runtime/status.py).
-- Run times (slot, due_at, started_at, finished_at) are in the nodes' scheduler clock, normally
-- the wall clock; so windows ("last 10 minutes", "missed in 24 h", "overdue") are measured
-- against %(now)s, the fleet's scheduler time (runtime/fleet_clock.py), never the database's
-- now(). Heartbeats are database time and are measured against now(). A start lag is
-- started_at - (slot + offset), so it never mixes the two clocks.

-- name: status_database
-- The database itself: is it busy? Connections to the server and its limit; of this database:
-- active statements, sessions waiting on a lock, the longest running statement.
SELECT now() AS now,
       current_setting('server_version') AS server_version,
       current_setting('max_connections')::int AS max_connections,
       (SELECT count(*) FROM pg_stat_activity) AS connections,
       (SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND state = 'active'
           AND pid <> pg_backend_pid()) AS active,
       (SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock') AS lock_waits,
       (SELECT COALESCE(max(EXTRACT(EPOCH FROM now() - query_start)), 0)
          FROM pg_stat_activity
         WHERE datname = current_database() AND state = 'active'
           AND pid <> pg_backend_pid() AND backend_type = 'client backend') AS longest_query_s;

-- name: status_queue
-- Runs waiting or in flight: claimed (held by a node, or running: the database does not tell
-- them apart; the nodes' stats do) and queued (manual triggers no node has taken yet).
SELECT count(*) FILTER (WHERE state = 'claimed') AS claimed,
       count(*) FILTER (WHERE state = 'queued') AS queued,
       min(due_at) AS oldest_due_at,
       (SELECT id FROM plugin_runtime.runs o
         WHERE o.state IN ('queued', 'claimed') ORDER BY o.due_at, o.id LIMIT 1) AS oldest_run_id
  FROM plugin_runtime.runs
 WHERE state IN ('queued', 'claimed');

-- name: status_cadences
-- Per cadence: how many runnable tasks, start lag (p50/p99, on-time first attempts of the last
-- %(window_s)s seconds), runs per minute, tasks overdue with nothing in flight (the oldest
-- unstarted slot), and slots recorded missed in the last day.
WITH cadences(cadence) AS (
    VALUES ('minute'), ('hour'), ('day'), ('cron')
),
recent AS (
    SELECT t.cadence,
           EXTRACT(EPOCH FROM r.started_at - (r.slot + make_interval(secs => t.offset_s))) AS lag_s,
           r.backfilled, r.attempt, r.manual, r.outcome
      FROM plugin_runtime.runs r
      JOIN plugin_runtime.tasks t ON t.id = r.task_id
     WHERE r.finished_at >= %(now)s::timestamptz - make_interval(secs => %(window_s)s)
       AND r.state = 'done'
       AND r.outcome NOT IN ('missed', 'released', 'cancelled')
),
lag AS (
    SELECT cadence,
           count(*) AS runs,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_s)
               FILTER (WHERE NOT backfilled AND attempt = 1 AND NOT manual AND lag_s IS NOT NULL) AS lag_p50_s,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_s)
               FILTER (WHERE NOT backfilled AND attempt = 1 AND NOT manual AND lag_s IS NOT NULL) AS lag_p99_s,
           count(*) FILTER (WHERE outcome <> 'ok' AND outcome <> 'duplicate' AND outcome <> 'lost') AS failed
      FROM recent
     GROUP BY cadence
),
tasks AS (
    SELECT t.cadence,
           count(*) AS tasks,
           count(*) FILTER (WHERE t.active_run_id IS NULL AND t.next_due_at < %(now)s::timestamptz) AS overdue,
           min(t.next_due_at) FILTER (WHERE t.active_run_id IS NULL AND t.next_due_at < %(now)s::timestamptz) AS oldest_overdue_due_at,
           min(t.next_slot) FILTER (WHERE t.active_run_id IS NULL AND t.next_due_at < %(now)s::timestamptz) AS oldest_unstarted_slot
      FROM plugin_runtime.tasks t
      JOIN plugin_runtime.plugin_configs c ON c.id = t.config_id
     WHERE c.enabled AND c.quarantined_at IS NULL
     GROUP BY t.cadence
),
missed AS (
    SELECT t.cadence, count(*) AS missed_24h
      FROM plugin_runtime.runs r
      JOIN plugin_runtime.tasks t ON t.id = r.task_id
     WHERE r.outcome = 'missed' AND r.finished_at >= %(now)s::timestamptz - interval '24 hours'
     GROUP BY t.cadence
)
SELECT c.cadence,
       COALESCE(tasks.tasks, 0) AS tasks,
       COALESCE(lag.runs, 0) AS runs,
       COALESCE(lag.failed, 0) AS failed,
       COALESCE(lag.runs, 0) / (%(window_s)s / 60.0) AS runs_per_min,
       lag.lag_p50_s, lag.lag_p99_s,
       COALESCE(tasks.overdue, 0) AS overdue,
       tasks.oldest_overdue_due_at,
       tasks.oldest_unstarted_slot,
       EXTRACT(EPOCH FROM %(now)s::timestamptz - tasks.oldest_overdue_due_at) AS overdue_s,
       COALESCE(missed.missed_24h, 0) AS missed_24h
  FROM cadences c
  LEFT JOIN lag ON lag.cadence = c.cadence
  LEFT JOIN tasks ON tasks.cadence = c.cadence
  LEFT JOIN missed ON missed.cadence = c.cadence
 WHERE tasks.tasks IS NOT NULL OR lag.runs IS NOT NULL OR missed.missed_24h IS NOT NULL
 ORDER BY array_position(ARRAY['minute', 'hour', 'day', 'cron'], c.cadence);

-- name: status_nodes
-- Every node with its heartbeat age (database clock), what it holds, and its recent throughput
-- (scheduler clock). Nodes stopped more than %(stopped_shown_s)s seconds ago are left out (their
-- number is in status_hidden_nodes).
SELECT n.id, n.hostname, n.pid, n.capabilities, n.layers, n.posture, n.posture_reason,
       n.layer_reasons, n.concurrency, n.started_at,
       n.heartbeat_at, n.stopped_at, n.stats,
       EXTRACT(EPOCH FROM now() - n.heartbeat_at) AS heartbeat_age_s,
       (SELECT count(*) FROM plugin_runtime.runs r
         WHERE r.node = n.id AND r.state = 'claimed') AS claimed,
       (SELECT count(*) FROM plugin_runtime.runs r
         WHERE r.node = n.id AND r.finished_at >= %(now)s::timestamptz - make_interval(secs => %(window_s)s)
           AND r.state = 'done' AND r.started_at IS NOT NULL) AS finished_recent
  FROM plugin_runtime.nodes n
 WHERE n.stopped_at IS NULL OR n.stopped_at >= now() - make_interval(secs => %(stopped_shown_s)s)
 ORDER BY n.stopped_at IS NOT NULL, n.id;

-- name: status_hidden_nodes
-- How many stopped nodes status_nodes leaves out.
SELECT count(*) AS n
  FROM plugin_runtime.nodes n
 WHERE n.stopped_at < now() - make_interval(secs => %(stopped_shown_s)s);

-- name: status_worst_configs
-- Plugin configs over the last %(window_s)s seconds: the top %(top)s by failures, by timeouts and
-- by p95 duration (a config can be in several lists; it appears once).
WITH per_config AS (
    SELECT r.config_id,
           count(*) AS runs,
           count(*) FILTER (WHERE r.outcome NOT IN ('ok', 'duplicate', 'lost')) AS failures,
           count(*) FILTER (WHERE r.outcome = 'timeout') AS timeouts,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY r.duration_ms) AS p95_ms,
           (array_agg(r.outcome ORDER BY r.id DESC))[1] AS last_outcome
      FROM plugin_runtime.runs r
     WHERE r.finished_at >= %(now)s::timestamptz - make_interval(secs => %(window_s)s)
       AND r.state = 'done'
       AND r.outcome NOT IN ('missed', 'released', 'cancelled')
     GROUP BY r.config_id
),
ranked AS (
    SELECT pc.*,
           rank() OVER (ORDER BY failures DESC) AS by_failures,
           rank() OVER (ORDER BY timeouts DESC) AS by_timeouts,
           rank() OVER (ORDER BY p95_ms DESC NULLS LAST) AS by_p95
      FROM per_config pc
)
SELECT r.config_id, p.name AS plugin, c.enabled, c.quarantined_at, c.consecutive_failures,
       r.runs, r.failures, r.timeouts, r.p95_ms, r.last_outcome,
       ARRAY(SELECT t.name FROM plugin_runtime.tasks t
              WHERE t.config_id = r.config_id ORDER BY t.name) AS tasks
  FROM ranked r
  LEFT JOIN plugin_runtime.plugin_configs c ON c.id = r.config_id
  LEFT JOIN plugin_runtime.plugins p ON p.id = c.plugin_id
 WHERE (r.by_failures <= %(top)s AND r.failures > 0)
    OR (r.by_timeouts <= %(top)s AND r.timeouts > 0)
    OR r.by_p95 <= %(top)s
 ORDER BY r.failures DESC, r.timeouts DESC, r.p95_ms DESC NULLS LAST
 LIMIT 3 * %(top)s;

-- name: status_attention_configs
-- Configs an operator should look at: quarantined ones (with the reason), and enabled ones
-- whose last %(failing_from)s or more runs failed, each with its latest failed run and error.
SELECT c.id AS config_id, p.name AS plugin, c.enabled, c.quarantined_at, c.quarantine_reason,
       c.consecutive_failures,
       (SELECT r.outcome FROM plugin_runtime.runs r
         WHERE r.config_id = c.id AND r.state = 'done'
           AND r.outcome NOT IN ('missed', 'released', 'cancelled')
         ORDER BY r.id DESC LIMIT 1) AS last_outcome,
       f.id AS last_failed_run_id, f.outcome AS last_failed_outcome, f.error AS last_error,
       ARRAY(SELECT t.name FROM plugin_runtime.tasks t
              WHERE t.config_id = c.id ORDER BY t.name) AS tasks
  FROM plugin_runtime.plugin_configs c
  JOIN plugin_runtime.plugins p ON p.id = c.plugin_id
  LEFT JOIN LATERAL (
      SELECT r.id, r.outcome, r.error FROM plugin_runtime.runs r
       WHERE r.config_id = c.id AND r.state = 'done'
         AND r.outcome NOT IN ('ok', 'duplicate', 'lost', 'released', 'missed', 'cancelled')
       ORDER BY r.id DESC LIMIT 1) f ON true
 WHERE c.quarantined_at IS NOT NULL
    OR (c.enabled AND c.consecutive_failures >= %(failing_from)s)
 ORDER BY c.quarantined_at IS NULL, c.consecutive_failures DESC, c.id
 LIMIT 100;

-- name: configs_by_plugin
-- The configs of each plugin by state, for the /metrics gauges (runtime/metrics.py): enabled
-- (and not quarantined: they run), disabled, quarantined.
SELECT p.name AS plugin,
       count(*) FILTER (WHERE c.enabled AND c.quarantined_at IS NULL) AS enabled,
       count(*) FILTER (WHERE NOT c.enabled AND c.quarantined_at IS NULL) AS disabled,
       count(*) FILTER (WHERE c.quarantined_at IS NOT NULL) AS quarantined
  FROM plugin_runtime.plugins p
  JOIN plugin_runtime.plugin_configs c ON c.plugin_id = p.id
 GROUP BY p.name
 ORDER BY p.name;

-- name: config_exists
SELECT id FROM plugin_runtime.plugin_configs WHERE id = %(id)s;

-- name: logs_tail
-- The last %(limit)s log lines of a config (optionally of one run), newest first.
SELECT l.id, l.run_id, l.ts, l.level, l.message, r.task
  FROM plugin_runtime.logs l
  LEFT JOIN plugin_runtime.runs r ON r.id = l.run_id
 WHERE l.config_id = %(config_id)s
   AND (%(run_id)s::bigint IS NULL OR l.run_id = %(run_id)s::bigint)
 ORDER BY l.id DESC
 LIMIT %(limit)s;

-- name: logs_after
-- Log lines of a config (optionally of one run) after line %(after_id)s, oldest first (--follow).
SELECT l.id, l.run_id, l.ts, l.level, l.message, r.task
  FROM plugin_runtime.logs l
  LEFT JOIN plugin_runtime.runs r ON r.id = l.run_id
 WHERE l.config_id = %(config_id)s
   AND (%(run_id)s::bigint IS NULL OR l.run_id = %(run_id)s::bigint)
   AND l.id > %(after_id)s
 ORDER BY l.id
 LIMIT %(limit)s;

-- name: failed_runs_of_config
-- The errors that end failed runs' lines in `logs`: done runs of a config (optionally one run)
-- with an error, newest first, from run %(from_run_id)s on, at most %(limit)s.
SELECT r.id AS run_id, r.finished_at AS ts, r.task, r.outcome, r.error
  FROM plugin_runtime.runs r
 WHERE r.config_id = %(config_id)s
   AND (%(run_id)s::bigint IS NULL OR r.id = %(run_id)s::bigint)
   AND r.id >= %(from_run_id)s
   AND r.state = 'done' AND r.error IS NOT NULL AND r.outcome <> 'ok'
 ORDER BY r.id DESC
 LIMIT %(limit)s;

-- name: run_of_config
SELECT id, config_id FROM plugin_runtime.runs WHERE id = %(run_id)s;

-- name: prune_runs
-- One batch of retention: done runs finished before the cutoff (measured against %(now)s, the
-- scheduler clock that wrote finished_at) (never one still in flight, and
-- never the run a task names as active). Short: at most %(batch)s rows per statement.
DELETE FROM plugin_runtime.runs
 WHERE id IN (SELECT r.id FROM plugin_runtime.runs r
               WHERE r.finished_at < %(now)s::timestamptz - %(days)s * interval '1 day'
                 AND r.state = 'done'
                 AND NOT EXISTS (SELECT 1 FROM plugin_runtime.tasks t WHERE t.active_run_id = r.id)
               LIMIT %(batch)s
                 FOR UPDATE SKIP LOCKED);

-- name: prune_logs
-- One batch of log retention: lines older than the cutoff, at most %(batch)s per statement.
DELETE FROM plugin_runtime.logs
 WHERE id IN (SELECT l.id FROM plugin_runtime.logs l
               WHERE l.ts < %(now)s::timestamptz - %(days)s * interval '1 day'
               ORDER BY l.id
               LIMIT %(batch)s
                 FOR UPDATE SKIP LOCKED);

-- name: fleet_clock
-- Live nodes, freshest heartbeat first, with their scheduler clock reading at that heartbeat
-- (runtime/fleet_clock.py). One row with no node when none is alive, for the database's now().
SELECT n.id, n.stats, now() AS database_now,
       EXTRACT(EPOCH FROM now() - n.heartbeat_at) AS since_heartbeat_s
  FROM (SELECT 1) one
  LEFT JOIN plugin_runtime.nodes n
    ON n.stopped_at IS NULL AND n.heartbeat_at >= now() - make_interval(secs => %(live_s)s)
 ORDER BY n.heartbeat_at DESC NULLS LAST;

-- name: config_page
-- A config for its status page: plugin, state, and its tasks with their pointers.
SELECT c.id AS config_id, p.name AS plugin, p.version, c.enabled, c.quarantined_at,
       c.quarantine_reason, c.consecutive_failures, c.created_at,
       COALESCE((SELECT jsonb_agg(jsonb_build_object(
                    'name', t.name, 'cadence', t.cadence, 'cron', t.cron,
                    'time_zone', t.time_zone,
                    'next_slot', t.next_slot, 'next_due_at', t.next_due_at,
                    'active_run_id', t.active_run_id) ORDER BY t.name)
                   FROM plugin_runtime.tasks t WHERE t.config_id = c.id), '[]'::jsonb) AS tasks
  FROM plugin_runtime.plugin_configs c
  JOIN plugin_runtime.plugins p ON p.id = c.plugin_id
 WHERE c.id = %(config_id)s;

-- name: config_runs_since
-- A config's runs whose slot is at or after %(since)s (scheduler time), for its slot grid.
SELECT r.id, r.task, r.slot, r.state, r.outcome, r.manual, r.error
  FROM plugin_runtime.runs r
 WHERE r.config_id = %(config_id)s AND r.slot >= %(since)s
 ORDER BY r.id
 LIMIT 20000;

-- name: chart_runs_per_minute
-- The front page's first chart: finished runs per minute by outcome over the last
-- %(window_s)s seconds of scheduler time.
SELECT date_trunc('minute', r.finished_at) AS minute, r.outcome, count(*) AS runs
  FROM plugin_runtime.runs r
 WHERE r.finished_at >= %(now)s::timestamptz - make_interval(secs => %(window_s)s)
   AND r.finished_at <= %(now)s::timestamptz
   AND r.state = 'done'
   AND r.outcome NOT IN ('released', 'cancelled')
 GROUP BY 1, 2
 ORDER BY 1, 2;

-- name: chart_lag_per_minute
-- The front page's second chart: start lag (p50 and p99) per minute and cadence of the on-time
-- first attempts that started in the last %(window_s)s seconds of scheduler time.
SELECT date_trunc('minute', r.started_at) AS minute, t.cadence,
       count(*) AS runs,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM
           r.started_at - (r.slot + make_interval(secs => t.offset_s)))) AS lag_p50_s,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM
           r.started_at - (r.slot + make_interval(secs => t.offset_s)))) AS lag_p99_s
  FROM plugin_runtime.runs r
  JOIN plugin_runtime.tasks t ON t.id = r.task_id
 WHERE r.started_at >= %(now)s::timestamptz - make_interval(secs => %(window_s)s)
   AND r.started_at <= %(now)s::timestamptz
   AND NOT r.backfilled AND r.attempt = 1 AND NOT r.manual
 GROUP BY 1, 2
 ORDER BY 1, 2;
