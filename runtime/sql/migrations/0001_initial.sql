-- 0001: the whole schema of plugin-runtime. Applied under an advisory lock by `db migrate`.
CREATE SCHEMA IF NOT EXISTS plugin_runtime;
SET search_path = plugin_runtime;

-- Plugins: code and manifest are stored so that every node runs the same version.
CREATE TABLE plugins (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    version      text NOT NULL,
    manifest     jsonb NOT NULL,
    source       text NOT NULL,
    -- [{"name": "run_every_hour", "cadence": "hour", "cron": "0 * * * *"}, ...], computed at install
    tasks        jsonb NOT NULL DEFAULT '[]',
    installed_at timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- One installed copy of a plugin with its own settings.
CREATE TABLE plugin_configs (
    id                   bigserial PRIMARY KEY,
    plugin_id            bigint NOT NULL REFERENCES plugins (id) ON DELETE CASCADE,
    settings             jsonb NOT NULL DEFAULT '{}',
    enabled              boolean NOT NULL DEFAULT true,
    quarantined_at       timestamptz,
    quarantine_reason    text,
    consecutive_failures integer NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plugin_configs_plugin_idx ON plugin_configs (plugin_id);

-- Task slot bookkeeping: one row per (config, scheduled function).
-- next_slot is the oldest slot not yet finished (NULL: not initialised yet);
-- next_due_at is when a node should start it (slot + offset, or a retry time);
-- active_run_id is the run in flight, if any (a task never has two at once).
CREATE TABLE tasks (
    id             bigserial PRIMARY KEY,
    config_id      bigint NOT NULL REFERENCES plugin_configs (id) ON DELETE CASCADE,
    name           text NOT NULL,
    cadence        text NOT NULL CHECK (cadence IN ('minute', 'hour', 'day', 'cron')),
    cron           text NOT NULL,
    offset_s       double precision NOT NULL DEFAULT 0,
    next_slot      timestamptz,
    next_due_at    timestamptz NOT NULL DEFAULT now(),
    attempt        integer NOT NULL DEFAULT 1,
    active_run_id  bigint,
    coalesced      bigint NOT NULL DEFAULT 0,
    missed         bigint NOT NULL DEFAULT 0,
    UNIQUE (config_id, name)
);
CREATE INDEX tasks_due_idx ON tasks (next_due_at) WHERE active_run_id IS NULL;

-- Runs: one row per attempt. state: queued (manual trigger) -> claimed -> running -> done.
-- outcome: the sandbox outcome, or 'missed' (slot beyond the catch-up window), 'lost'
-- (its node died), 'cancelled' (config disabled before it started), 'duplicate'.
CREATE TABLE runs (
    id           bigserial PRIMARY KEY,
    task_id      bigint REFERENCES tasks (id) ON DELETE SET NULL,
    config_id    bigint NOT NULL,
    task         text NOT NULL,
    slot         timestamptz NOT NULL,
    attempt      integer NOT NULL DEFAULT 1,
    manual       boolean NOT NULL DEFAULT false,
    backfilled   boolean NOT NULL DEFAULT false,
    state        text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'claimed', 'running', 'done')),
    outcome      text,
    node         text,
    due_at       timestamptz NOT NULL DEFAULT now(),
    claimed_at   timestamptz,
    started_at   timestamptz,
    finished_at  timestamptz,
    duration_ms  double precision,
    error        jsonb,
    result       jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX runs_config_idx ON runs (config_id, id DESC);
CREATE INDEX runs_active_idx ON runs (node) WHERE state IN ('claimed', 'running');
CREATE INDEX runs_queued_idx ON runs (due_at) WHERE state = 'queued';
CREATE INDEX runs_finished_idx ON runs (finished_at);
-- At most one successful run per scheduled slot, whatever the size of the fleet.
CREATE UNIQUE INDEX runs_one_success_per_slot ON runs (task_id, slot) WHERE outcome = 'ok' AND NOT manual;

-- Plugin storage: JSON values private to one config. Written only with a run's success.
CREATE TABLE storage (
    config_id  bigint NOT NULL REFERENCES plugin_configs (id) ON DELETE CASCADE,
    key        text NOT NULL,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (config_id, key)
);

-- Log lines of runs (print and meta.logger), capped per run by the sandbox.
CREATE TABLE logs (
    id        bigserial PRIMARY KEY,
    run_id    bigint NOT NULL,
    config_id bigint NOT NULL,
    ts        timestamptz NOT NULL DEFAULT now(),
    level     text NOT NULL,
    message   text NOT NULL
);
CREATE INDEX logs_run_idx ON logs (run_id, id);
CREATE INDEX logs_config_idx ON logs (config_id, id);

-- Supervisor nodes of the fleet and their heartbeats.
CREATE TABLE nodes (
    id           text PRIMARY KEY,
    hostname     text NOT NULL,
    pid          integer NOT NULL,
    capabilities text[] NOT NULL DEFAULT '{scheduledTasks}',
    layers       jsonb NOT NULL DEFAULT '{}',
    concurrency  integer NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at   timestamptz,
    stats        jsonb NOT NULL DEFAULT '{}'
);

-- Reload without restart: any change to a plugin or config, by the CLI or by hand in psql,
-- notifies every node, which reloads that config within seconds.
CREATE FUNCTION notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN
        payload := jsonb_build_object('table', TG_TABLE_NAME, 'op', TG_OP, 'id', OLD.id);
    ELSE
        payload := jsonb_build_object('table', TG_TABLE_NAME, 'op', TG_OP, 'id', NEW.id);
    END IF;
    IF TG_TABLE_NAME = 'plugin_configs' THEN
        -- Whether the config may run now: nodes drop its held runs at once when it may not.
        payload := payload || jsonb_build_object(
            'runnable', TG_OP <> 'DELETE' AND NEW.enabled AND NEW.quarantined_at IS NULL);
    END IF;
    PERFORM pg_notify('plugin_runtime_changes', payload::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER plugin_configs_notify AFTER INSERT OR DELETE ON plugin_configs
    FOR EACH ROW EXECUTE FUNCTION notify_change();
-- Only changes an operator makes notify; the run bookkeeping (consecutive_failures) does not.
CREATE TRIGGER plugin_configs_notify_update AFTER UPDATE ON plugin_configs
    FOR EACH ROW
    WHEN (OLD.enabled IS DISTINCT FROM NEW.enabled
          OR OLD.settings IS DISTINCT FROM NEW.settings
          OR OLD.plugin_id IS DISTINCT FROM NEW.plugin_id
          OR OLD.quarantined_at IS DISTINCT FROM NEW.quarantined_at)
    EXECUTE FUNCTION notify_change();
CREATE TRIGGER plugins_notify AFTER INSERT OR UPDATE OR DELETE ON plugins
    FOR EACH ROW EXECUTE FUNCTION notify_change();
