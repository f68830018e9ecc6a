-- Per-machine configuration for cloud-init (docs/config.md): profiles selected by labels, a
-- machine's own configuration, and the effective configuration snapshotted into every
-- deployment. Every configuration document may hold secrets (user-data), so the store keeps
-- only what kilnd sealed (AES-256-GCM under secrets.key_file) and the SHA-256 of its canonical
-- plaintext form (shown in the history; equal hashes mean equal configurations).
CREATE TABLE config_profiles (
  id            INTEGER PRIMARY KEY,
  name          TEXT    NOT NULL UNIQUE,
  selector      TEXT    NOT NULL,           -- label selector ("rack=r12,role=web"); "" = all
  priority      INTEGER NOT NULL DEFAULT 0, -- merge order: lower first, then by name
  config        TEXT    NOT NULL,           -- sealed JSON document
  config_sha256 TEXT    NOT NULL,
  created_at    INTEGER NOT NULL,
  updated_at    INTEGER NOT NULL
);

CREATE TABLE machine_configs (
  machine_id    INTEGER PRIMARY KEY REFERENCES machines (id),
  config        TEXT    NOT NULL,           -- sealed JSON document
  config_sha256 TEXT    NOT NULL,
  updated_at    INTEGER NOT NULL
);

-- The deployment's effective configuration, fixed at assignment (NULL: none applied). A
-- rollback copies the snapshot of the deployment it returns to.
ALTER TABLE deployments ADD COLUMN config TEXT;
ALTER TABLE deployments ADD COLUMN config_sha256 TEXT;

DROP TRIGGER deployments_immutable;
CREATE TRIGGER deployments_immutable
BEFORE UPDATE OF id, machine_id, from_version_id, to_version_id, kind, requested_by, created_at,
  config, config_sha256
ON deployments
BEGIN
  SELECT RAISE(ABORT, 'deployment history is immutable');
END;
