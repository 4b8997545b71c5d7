-- The listener's statements (runtime/node/listener.py), on a session of its own: LISTEN needs
-- one. The channel names are runtime.node.gateway.CHANNELS and PROBE_CHANNEL.

-- name: listen_changes
-- Plugins and configs inserted, updated or deleted (the triggers of migration 0001).
LISTEN plugin_runtime_changes;

-- name: listen_trigger
-- Manual runs queued (`plugin-runtime trigger`, the status page's Run button).
LISTEN plugin_runtime_trigger;

-- name: listen_probe
-- The channel the listener checks that it hears on (behind PgBouncer in transaction mode it
-- does not).
LISTEN plugin_runtime_probe;

-- name: notify_probe
-- Sent from a second connection: the listener waits for this token.
SELECT pg_notify(%(channel)s, %(token)s);

-- name: unlisten_all
-- Leave nothing listening on a pooled server connection.
UNLISTEN *;
