-- The supervisor's hot path. Every statement here serves a whole batch of tasks or runs:
-- a tick is two statements whatever the number of due tasks, a flush of finished runs is one.
-- Scheduling times (%(horizon)s, slots, due times) come from the node's scheduler clock;
-- liveness (heartbeats, leases) uses the database's own now().

-- name: claim_due_tasks
-- Lock the tasks a node should start within the lookahead, and heartbeat in the same statement.
-- SKIP LOCKED splits due tasks between nodes with no leader. Tasks of disabled or quarantined
-- configs are not selected at all, so a direct SQL `UPDATE ... SET enabled = false` stops them
-- at the next tick of every node.
WITH heartbeat AS (
    UPDATE plugin_runtime.nodes
       SET heartbeat_at = now(), stopped_at = NULL, stats = %(stats)s
     WHERE id = %(node)s
    RETURNING 1
)
SELECT t.id, t.config_id, t.name, t.cadence, t.cron, t.time_zone, t.offset_s, t.next_slot,
       t.next_due_at, t.attempt, c.plugin_id, c.settings, p.updated_at AS plugin_updated_at
  FROM plugin_runtime.tasks t
  JOIN plugin_runtime.plugin_configs c ON c.id = t.config_id
  JOIN plugin_runtime.plugins p ON p.id = c.plugin_id
 WHERE t.active_run_id IS NULL
   -- A task not initialised yet is looked at at once (its next_due_at is the database's time of
   -- its insert, not the scheduler's), unless deciding it failed (attempt 0): then it waits.
   AND (t.next_due_at <= %(horizon)s OR (t.next_slot IS NULL AND t.attempt > 0))
   AND c.enabled
   AND c.quarantined_at IS NULL
 -- Hourly, daily and cron slots first: when a node cannot take everything that is due, minute
 -- tasks (which may be late or coalesced) wait, never the slots that must not be skipped.
 ORDER BY (t.cadence = 'minute'), t.next_due_at
 LIMIT %(limit)s
   FOR UPDATE OF t SKIP LOCKED;

-- name: record_claims
-- For every task looked at in this tick: move its pointer; for those that run, insert the run
-- already claimed by this node and mark it active on the task; record missed slots, and the
-- failure of a task whose decision failed (its `error`). Returns the claimed runs with their
-- config's storage snapshot. The column list is runtime/node/records.py's `Claim`.
WITH d AS (
    SELECT * FROM jsonb_to_recordset(%(claims)s::jsonb) AS d(/*columns:Claim*/)
),
ins AS (
    INSERT INTO plugin_runtime.runs
           (task_id, config_id, task, slot, attempt, backfilled, state, node, due_at, claimed_at)
    SELECT d.task_id, t.config_id, t.name, d.run_slot, d.attempt, d.backfilled, 'claimed',
           %(node)s, d.due_at, now()
      FROM d JOIN plugin_runtime.tasks t ON t.id = d.task_id
     WHERE d.run_slot IS NOT NULL
    RETURNING id, task_id, config_id
),
moved AS (
    UPDATE plugin_runtime.tasks t
       SET next_slot = d.next_slot,
           next_due_at = d.next_due_at,
           offset_s = COALESCE(d.offset_s, t.offset_s),
           attempt = d.attempt,
           active_run_id = ins.id,
           coalesced = t.coalesced + d.coalesced,
           missed = t.missed + d.missed_count
      FROM d LEFT JOIN ins ON ins.task_id = d.task_id
     WHERE t.id = d.task_id
),
missed AS (
    INSERT INTO plugin_runtime.runs
           (task_id, config_id, task, slot, attempt, state, outcome, node, due_at, finished_at, error)
    SELECT d.task_id, t.config_id, t.name, m.slot, 0, 'done', 'missed', %(node)s, m.slot,
           %(now)s, jsonb_build_object('type', 'Missed', 'message',
                                       'slot is older than the catch-up window', 'traceback', '[]'::jsonb)
      FROM d
      JOIN plugin_runtime.tasks t ON t.id = d.task_id
     CROSS JOIN LATERAL unnest(d.missed_slots) AS m(slot)
),
failed AS (
    INSERT INTO plugin_runtime.runs
           (task_id, config_id, task, slot, attempt, state, outcome, node, due_at, finished_at, error)
    SELECT d.task_id, t.config_id, t.name, COALESCE(d.next_slot, %(now)s), d.attempt, 'done',
           'error', %(node)s, %(now)s, %(now)s, d.error
      FROM d JOIN plugin_runtime.tasks t ON t.id = d.task_id
     WHERE d.error IS NOT NULL
),
failing AS (
    -- A failed decision counts against its config like a failed run: `doctor` shows the config
    -- (with this error) from the first one; its next success clears the streak.
    UPDATE plugin_runtime.plugin_configs c
       SET consecutive_failures = c.consecutive_failures + f.n
      FROM (SELECT t.config_id, count(*) AS n
              FROM d JOIN plugin_runtime.tasks t ON t.id = d.task_id
             WHERE d.error IS NOT NULL
             GROUP BY t.config_id) f
     WHERE c.id = f.config_id
)
SELECT ins.id, ins.task_id, ins.config_id,
       COALESCE((SELECT jsonb_object_agg(s.key, s.value)
                   FROM plugin_runtime.storage s WHERE s.config_id = ins.config_id), '{}'::jsonb)
           AS storage
  FROM ins;

-- name: claim_manual_runs
-- Runs queued by `plugin-runtime trigger`, claimed in one batch, with storage and settings.
WITH claimed AS (
    UPDATE plugin_runtime.runs r
       SET state = 'claimed', node = %(node)s, claimed_at = now()
     WHERE r.id IN (SELECT q.id
                      FROM plugin_runtime.runs q
                      JOIN plugin_runtime.plugin_configs c ON c.id = q.config_id
                     WHERE q.state = 'queued'
                     ORDER BY q.id
                     LIMIT %(limit)s
                       FOR UPDATE OF q SKIP LOCKED)
    RETURNING r.id, r.task_id, r.config_id, r.task, r.slot, r.attempt
)
SELECT cl.id, cl.task_id, cl.config_id, cl.task, cl.slot, cl.attempt,
       c.plugin_id, c.settings, p.updated_at AS plugin_updated_at,
       COALESCE(t.cadence, 'manual') AS cadence,
       COALESCE((SELECT jsonb_object_agg(s.key, s.value)
                   FROM plugin_runtime.storage s WHERE s.config_id = cl.config_id), '{}'::jsonb)
           AS storage
  FROM claimed cl
  JOIN plugin_runtime.plugin_configs c ON c.id = cl.config_id
  JOIN plugin_runtime.plugins p ON p.id = c.plugin_id
  LEFT JOIN plugin_runtime.tasks t ON t.id = cl.task_id;

-- name: complete_runs
-- Record a batch of finished runs in one statement. A run counts only if it is still claimed by
-- the node that ran it (a run released after its node was presumed dead is not recorded twice);
-- storage writes are applied in this same statement, only for runs that succeeded, so a failed,
-- killed or discarded run leaves storage as it was. Pointer moves apply only while the task
-- still names this run as active. Storage upserts/deletes arrive merged per (config, key).
-- Column lists: runtime/node/records.py's `Completion`, `StorageWrite`, `StorageDelete`.
WITH r AS (
    SELECT * FROM jsonb_to_recordset(%(runs)s::jsonb) AS r(/*columns:Completion*/)
),
done AS (
    UPDATE plugin_runtime.runs x
       SET state = 'done',
           outcome = CASE
                         WHEN r.outcome = 'ok' AND NOT x.manual AND EXISTS (
                              SELECT 1 FROM plugin_runtime.runs y
                               WHERE y.task_id = x.task_id AND y.slot = x.slot
                                 AND y.outcome = 'ok' AND NOT y.manual)
                         THEN 'duplicate'
                         ELSE r.outcome
                     END,
           started_at = r.started_at,
           finished_at = r.finished_at,
           duration_ms = r.duration_ms,
           error = r.error,
           result = r.result
      FROM r
     WHERE x.id = r.run_id AND x.state = 'claimed' AND x.node = r.node
    RETURNING x.id, x.task_id, x.config_id, x.outcome
),
moved AS (
    UPDATE plugin_runtime.tasks t
       SET active_run_id = NULL,
           next_slot = COALESCE(r.next_slot, t.next_slot),
           next_due_at = COALESCE(r.next_due_at, t.next_due_at),
           attempt = COALESCE(r.attempt, t.attempt)
      FROM r JOIN done ON done.id = r.run_id
     WHERE t.id = done.task_id AND t.active_run_id = r.run_id
),
ok_configs AS (
    SELECT DISTINCT config_id FROM done WHERE outcome = 'ok'
),
upserted AS (
    INSERT INTO plugin_runtime.storage (config_id, key, value, updated_at)
    SELECT w.config_id, w.key, w.value, now()
      FROM jsonb_to_recordset(%(writes)s::jsonb) AS w(/*columns:StorageWrite*/)
      JOIN done ON done.id = w.run_id AND done.outcome = 'ok'
      -- a config deleted while its run was in flight has no storage to write to
      JOIN plugin_runtime.plugin_configs c ON c.id = w.config_id
    ON CONFLICT (config_id, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
),
deleted AS (
    DELETE FROM plugin_runtime.storage s
     USING jsonb_to_recordset(%(deletes)s::jsonb) AS dl(/*columns:StorageDelete*/),
           done
     WHERE done.id = dl.run_id AND done.outcome = 'ok'
       AND s.config_id = dl.config_id AND s.key = dl.key
),
logged AS (
    INSERT INTO plugin_runtime.logs (run_id, config_id, ts, level, message)
    SELECT done.id, done.config_id, COALESCE((l.value ->> 'ts')::timestamptz, r.finished_at),
           l.value ->> 'level', l.value ->> 'message'
      FROM r JOIN done ON done.id = r.run_id
     CROSS JOIN LATERAL jsonb_array_elements(COALESCE(r.logs, '[]'::jsonb)) AS l(value)
),
streaks AS (
    -- Consecutive failures per config in this batch, in run order, for quarantine.
    SELECT done.config_id,
           bool_or(done.outcome IN ('ok')) AS any_ok,
           -- the plugin's failures (sandbox/outcome.py FAILURES), not the bookkeeping outcomes
           count(*) FILTER (WHERE done.outcome IN (/*outcomes:FAILURES*/)
                              AND done.id > COALESCE((SELECT max(o.id) FROM done o
                                                        WHERE o.config_id = done.config_id
                                                          AND o.outcome = 'ok'), 0)) AS failures,
           (array_agg(done.outcome ORDER BY done.id DESC))[1] AS last_outcome
      FROM done
     GROUP BY done.config_id
),
quarantine AS (
    UPDATE plugin_runtime.plugin_configs c
       SET consecutive_failures = CASE WHEN s.any_ok THEN s.failures
                                       ELSE c.consecutive_failures + s.failures END,
           quarantined_at = CASE
               WHEN c.quarantined_at IS NULL AND %(quarantine_after)s > 0
                    AND (CASE WHEN s.any_ok THEN s.failures
                              ELSE c.consecutive_failures + s.failures END) >= %(quarantine_after)s
               THEN now() ELSE c.quarantined_at END,
           quarantine_reason = CASE
               WHEN c.quarantined_at IS NULL AND %(quarantine_after)s > 0
                    AND (CASE WHEN s.any_ok THEN s.failures
                              ELSE c.consecutive_failures + s.failures END) >= %(quarantine_after)s
               THEN format('%%s runs in a row failed (last: %%s)',
                           CASE WHEN s.any_ok THEN s.failures
                                ELSE c.consecutive_failures + s.failures END, s.last_outcome)
               ELSE c.quarantine_reason END
      FROM streaks s
     WHERE c.id = s.config_id
       AND (s.failures > 0 OR c.consecutive_failures <> 0)
)
SELECT done.id, done.outcome FROM done;

-- name: release_runs
-- Give back runs this node claimed but will not run (shutdown, or their config was disabled):
-- the tasks become free again with their pointer and due time as they were.
WITH released AS (
    UPDATE plugin_runtime.runs x
       SET state = 'done', outcome = %(outcome)s, finished_at = %(now)s
     WHERE x.id = ANY(%(run_ids)s::bigint[]) AND x.state = 'claimed' AND x.node = %(node)s
    RETURNING x.id, x.task_id
)
UPDATE plugin_runtime.tasks t
   SET active_run_id = NULL
  FROM released
 WHERE t.id = released.task_id AND t.active_run_id = released.id;

-- name: register_node
INSERT INTO plugin_runtime.nodes (id, hostname, pid, capabilities, layers, concurrency,
                                   posture, posture_reason, layer_reasons)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(capabilities)s, %(layers)s, %(concurrency)s,
        %(posture)s, %(posture_reason)s, %(layer_reasons)s)
ON CONFLICT (id) DO UPDATE
   SET hostname = EXCLUDED.hostname, pid = EXCLUDED.pid, capabilities = EXCLUDED.capabilities,
       layers = EXCLUDED.layers, concurrency = EXCLUDED.concurrency,
       posture = EXCLUDED.posture, posture_reason = EXCLUDED.posture_reason,
       layer_reasons = EXCLUDED.layer_reasons,
       started_at = now(), heartbeat_at = now(), stopped_at = NULL;

-- name: stop_node
UPDATE plugin_runtime.nodes SET stopped_at = now(), heartbeat_at = now() WHERE id = %(id)s;

-- name: runs_of_dead_nodes
-- Runs still claimed by nodes whose heartbeat stopped (or, at a node's start, by an earlier
-- process with its node id): locked so that only one node recovers each, returned with what the
-- scheduler needs to decide their task's next step. The runs the asking node holds
-- (%(held)s, its ledger) are neither locked nor returned: a busy node holds thousands.
SELECT x.id AS run_id, x.node, x.task_id, x.slot, x.attempt, x.manual,
       t.cadence, t.cron, t.time_zone, t.offset_s, t.next_slot, t.attempt AS task_attempt,
       (t.active_run_id = x.id) AS is_active
  FROM plugin_runtime.runs x
  JOIN plugin_runtime.nodes n ON n.id = x.node
  LEFT JOIN plugin_runtime.tasks t ON t.id = x.task_id
 WHERE x.state = 'claimed'
   AND (n.heartbeat_at < now() - make_interval(secs => %(dead_after_s)s)
        OR x.node = %(own_node)s::text)
   AND NOT (x.node = %(own_node)s::text AND x.id = ANY(%(held)s::bigint[]))
 ORDER BY x.id
 LIMIT 5000
   FOR UPDATE OF x SKIP LOCKED;

-- name: mark_dead_nodes
UPDATE plugin_runtime.nodes
   SET stopped_at = heartbeat_at
 WHERE stopped_at IS NULL
   AND heartbeat_at < now() - make_interval(secs => %(dead_after_s)s);

-- name: get_plugin_code
SELECT id, name, manifest, source, updated_at FROM plugin_runtime.plugins WHERE id = %(id)s;

-- name: config_settings
-- Fresh settings of configs that changed, for runs a node holds but has not started.
SELECT id, settings FROM plugin_runtime.plugin_configs WHERE id = ANY(%(ids)s::bigint[]);
