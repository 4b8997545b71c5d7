-- What a node watches to log quarantine and release (runtime/quarantine_watch.py).

-- name: quarantined_configs
-- Every quarantined config with its reason and whether it is enabled; small (an operator acts on
-- each), read once per batch of config notifications.
SELECT c.id, c.quarantine_reason, c.enabled, c.consecutive_failures
  FROM plugin_runtime.plugin_configs c
 WHERE c.quarantined_at IS NOT NULL;

-- name: configs_enabled
SELECT c.id, c.enabled FROM plugin_runtime.plugin_configs c WHERE c.id = ANY(%(ids)s::bigint[]);
