-- kiln schema, version 1. Forward-only: later changes go into new NNNN_name.sql files.
-- Times are milliseconds since the Unix epoch (UTC). JSON columns hold objects.

CREATE TABLE image_versions (
  id           INTEGER PRIMARY KEY,
  name         TEXT    NOT NULL,
  version      TEXT    NOT NULL,
  size_bytes   INTEGER NOT NULL CHECK (size_bytes >= 0),
  sha256       TEXT    NOT NULL CHECK (length(sha256) = 64),
  format       TEXT    NOT NULL CHECK (format IN ('kiln', 'raw', 'raw.gz', 'raw.xz', 'raw.zst')),
  source_url   TEXT,
  description  TEXT    NOT NULL DEFAULT '',
  labels       TEXT    NOT NULL DEFAULT '{}',
  created_by   TEXT    NOT NULL,
  created_at   INTEGER NOT NULL,
  deleted_at   INTEGER
);
-- A name+version is unique among live versions; deleted ones stay for the history.
CREATE UNIQUE INDEX image_versions_live ON image_versions (name, version) WHERE deleted_at IS NULL;

CREATE TABLE machines (
  id                 INTEGER PRIMARY KEY,
  name               TEXT    NOT NULL DEFAULT '',
  uuid               TEXT,                       -- SMBIOS system UUID, lower-case
  state              TEXT    NOT NULL
                     CHECK (state IN ('discovered', 'ready', 'deploying', 'deployed', 'failed')),
  state_reason       TEXT    NOT NULL DEFAULT '',
  inventory          TEXT    NOT NULL DEFAULT '{}',
  current_version_id INTEGER REFERENCES image_versions (id),   -- what its disk holds, if known
  created_at         INTEGER NOT NULL,
  updated_at         INTEGER NOT NULL,
  deleted_at         INTEGER
);
CREATE UNIQUE INDEX machines_uuid ON machines (uuid) WHERE uuid IS NOT NULL AND deleted_at IS NULL;
CREATE INDEX machines_state ON machines (state) WHERE deleted_at IS NULL;

-- Every MAC belongs to at most one live machine; rows are removed when the machine is deleted.
CREATE TABLE machine_macs (
  mac        TEXT    PRIMARY KEY,
  machine_id INTEGER NOT NULL REFERENCES machines (id),
  position   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX machine_macs_machine ON machine_macs (machine_id);

CREATE TABLE machine_labels (
  machine_id INTEGER NOT NULL REFERENCES machines (id),
  key        TEXT    NOT NULL,
  value      TEXT    NOT NULL,
  PRIMARY KEY (machine_id, key)
) WITHOUT ROWID;
CREATE INDEX machine_labels_kv ON machine_labels (key, value);

-- Deployment history: append-only. The columns that say what was asked, by whom and when
-- never change; status, progress and timings advance until the deployment is finished.
CREATE TABLE deployments (
  id                 INTEGER PRIMARY KEY,
  machine_id         INTEGER NOT NULL REFERENCES machines (id),
  from_version_id    INTEGER REFERENCES image_versions (id),
  to_version_id      INTEGER NOT NULL REFERENCES image_versions (id),
  kind               TEXT    NOT NULL CHECK (kind IN ('assign', 'rollback')),
  requested_by       TEXT    NOT NULL,
  created_at         INTEGER NOT NULL,
  status             TEXT    NOT NULL
                     CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'superseded')),
  status_reason      TEXT    NOT NULL DEFAULT '',
  stage              TEXT    NOT NULL DEFAULT '',
  bytes_done         INTEGER NOT NULL DEFAULT 0,
  bytes_total        INTEGER NOT NULL DEFAULT 0,
  started_at         INTEGER,
  finished_at        INTEGER,
  agent_token_hash   TEXT    UNIQUE,
  agent_token_expires_at INTEGER
);
CREATE INDEX deployments_machine ON deployments (machine_id, id);
-- At most one active deployment per machine, enforced by the database itself.
CREATE UNIQUE INDEX deployments_one_active ON deployments (machine_id)
  WHERE status IN ('pending', 'running');

CREATE TRIGGER deployments_no_delete BEFORE DELETE ON deployments
BEGIN
  SELECT RAISE(ABORT, 'deployments are append-only');
END;
CREATE TRIGGER deployments_immutable
BEFORE UPDATE OF id, machine_id, from_version_id, to_version_id, kind, requested_by, created_at
ON deployments
BEGIN
  SELECT RAISE(ABORT, 'deployment history is immutable');
END;
CREATE TRIGGER deployments_finished BEFORE UPDATE ON deployments
WHEN OLD.status IN ('succeeded', 'failed', 'superseded')
BEGIN
  SELECT RAISE(ABORT, 'deployment already finished');
END;

-- API tokens: only the SHA-256 of a token is stored; the token itself is shown once.
CREATE TABLE api_tokens (
  id          INTEGER PRIMARY KEY,
  name        TEXT    NOT NULL,
  scope       TEXT    NOT NULL CHECK (scope IN ('read', 'admin')),
  token_hash  TEXT    NOT NULL UNIQUE CHECK (length(token_hash) = 64),
  created_at  INTEGER NOT NULL,
  revoked_at  INTEGER
);

-- Progress and audit records; the id is the cursor clients resume from.
CREATE TABLE events (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  created_at    INTEGER NOT NULL,
  type          TEXT    NOT NULL,
  machine_id    INTEGER,
  deployment_id INTEGER,
  data          TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX events_machine ON events (machine_id, id);
