-- 0004: the database holds runs to the project's vocabulary (sandbox/outcome.py `Outcome`):
-- an outcome or a state outside it is refused by PostgreSQL, whoever writes it.
SET search_path = plugin_runtime;

ALTER TABLE runs DROP CONSTRAINT IF EXISTS runs_state_check;
-- 'running' was never written: a claimed run is running or about to be, on its node.
ALTER TABLE runs ADD CONSTRAINT runs_state_check
    CHECK (state IN ('queued', 'claimed', 'done'));
ALTER TABLE runs ADD CONSTRAINT runs_outcome_check
    CHECK (outcome IN ('ok', 'error', 'timeout', 'cpu_limit', 'memory_limit', 'output_limit',
                       'crashed', 'bad_plugin', 'missed', 'lost', 'cancelled', 'released',
                       'duplicate'));
-- A finished run has an outcome; a run not finished has none.
ALTER TABLE runs ADD CONSTRAINT runs_outcome_when_done
    CHECK ((state = 'done') = (outcome IS NOT NULL));
DROP INDEX IF EXISTS runs_active_idx;
CREATE INDEX runs_active_idx ON runs (node) WHERE state = 'claimed';
