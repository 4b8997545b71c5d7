-- 0003: schedules in a time zone (docs/plugins.md#time-zones). A config may name an IANA time
-- zone (NULL: its plugin's declared `time_zone` in plugin.json, else UTC); each task keeps the
-- zone its slots are computed in (NULL: UTC), set by the task sync like its cron: a daily or
-- cron task takes the config's effective zone, a minute or hourly task none. The names are
-- checked where they are written (install, `configs create`, `configs set`); a bad one written
-- here by hand fails only its config's tasks, as a bad cron expression does.
SET search_path = plugin_runtime;

ALTER TABLE plugin_configs ADD COLUMN time_zone text;
ALTER TABLE tasks ADD COLUMN time_zone text;

-- A change of zone notifies the nodes like any other operator change (they sync its tasks).
DROP TRIGGER plugin_configs_notify_update ON plugin_configs;
CREATE TRIGGER plugin_configs_notify_update AFTER UPDATE ON plugin_configs
    FOR EACH ROW
    WHEN (OLD.enabled IS DISTINCT FROM NEW.enabled
          OR OLD.settings IS DISTINCT FROM NEW.settings
          OR OLD.plugin_id IS DISTINCT FROM NEW.plugin_id
          OR OLD.quarantined_at IS DISTINCT FROM NEW.quarantined_at
          OR OLD.time_zone IS DISTINCT FROM NEW.time_zone)
    EXECUTE FUNCTION notify_change();
