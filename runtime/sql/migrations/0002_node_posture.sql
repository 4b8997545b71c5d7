-- 0002: each node's sandbox posture (root, userns or unprivileged) and why, and why each of its
-- missing layers is off: `status` and `doctor` show them.
ALTER TABLE plugin_runtime.nodes
    ADD COLUMN posture        text NOT NULL DEFAULT '',
    ADD COLUMN posture_reason text NOT NULL DEFAULT '',
    ADD COLUMN layer_reasons  jsonb NOT NULL DEFAULT '{}';
