-- BMCs, confirmed boots and deadlines (docs/power.md).
--
-- A deployment gains the status 'booted': after 'succeeded' (the image is written) the deployed
-- OS proves it is up with its instance credential. SQLite cannot change a CHECK constraint in
-- place, so the table is rebuilt with the same rows, indexes and triggers (no other table
-- references it). 'succeeded' is no longer final: it may still become 'booted', or 'failed' when
-- the boot deadline passes.
CREATE TABLE deployments_v4 (
  id                 INTEGER PRIMARY KEY,
  machine_id         INTEGER NOT NULL REFERENCES machines (id),
  from_version_id    INTEGER REFERENCES image_versions (id),
  to_version_id      INTEGER NOT NULL REFERENCES image_versions (id),
  kind               TEXT    NOT NULL CHECK (kind IN ('assign', 'rollback')),
  requested_by       TEXT    NOT NULL,
  created_at         INTEGER NOT NULL,
  status             TEXT    NOT NULL
                     CHECK (status IN ('pending', 'running', 'succeeded', 'booted', 'failed',
                                       'superseded')),
  status_reason      TEXT    NOT NULL DEFAULT '',
  stage              TEXT    NOT NULL DEFAULT '',
  bytes_done         INTEGER NOT NULL DEFAULT 0,
  bytes_total        INTEGER NOT NULL DEFAULT 0,
  started_at         INTEGER,
  finished_at        INTEGER,
  agent_token_hash   TEXT    UNIQUE,
  agent_token_expires_at INTEGER,
  agent_ticket       TEXT,
  agent_ticket_expires_at INTEGER,
  agent_address      TEXT,
  agent_boots        INTEGER NOT NULL DEFAULT 0,
  manifest_served_at INTEGER,
  -- New in 0004.
  reboot             INTEGER NOT NULL DEFAULT 0 CHECK (reboot IN (0, 1)),  -- kilnd power-cycles it
  instance_token_hash TEXT   UNIQUE,   -- SHA-256 of the deployed OS's credential (in the plan)
  written_at         INTEGER,          -- the agent's verified success (status succeeded)
  booted_at          INTEGER,          -- the deployed OS confirmed its boot (status booted)
  powered_at         INTEGER,          -- kilnd's last power-on / reset of the machine for it
  deadline_at        INTEGER,          -- the current stage's deadline (NULL: none)
  deadline_misses    INTEGER NOT NULL DEFAULT 0  -- deadlines missed (each one power-cycles)
);
INSERT INTO deployments_v4 (id, machine_id, from_version_id, to_version_id, kind, requested_by,
  created_at, status, status_reason, stage, bytes_done, bytes_total, started_at, finished_at,
  agent_token_hash, agent_token_expires_at, agent_ticket, agent_ticket_expires_at, agent_address,
  agent_boots, manifest_served_at, written_at)
SELECT id, machine_id, from_version_id, to_version_id, kind, requested_by, created_at, status,
  status_reason, stage, bytes_done, bytes_total, started_at, finished_at, agent_token_hash,
  agent_token_expires_at, agent_ticket, agent_ticket_expires_at, agent_address, agent_boots,
  manifest_served_at, CASE WHEN status = 'succeeded' THEN finished_at END
FROM deployments;
DROP TABLE deployments;
ALTER TABLE deployments_v4 RENAME TO deployments;

CREATE INDEX deployments_machine ON deployments (machine_id, id);
CREATE UNIQUE INDEX deployments_one_active ON deployments (machine_id)
  WHERE status IN ('pending', 'running');
CREATE UNIQUE INDEX deployments_agent_ticket ON deployments (agent_ticket)
  WHERE agent_ticket IS NOT NULL;
CREATE INDEX deployments_deadline ON deployments (deadline_at) WHERE deadline_at IS NOT NULL;

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
-- booted, failed and superseded are final; succeeded may only become booted or failed.
CREATE TRIGGER deployments_finished BEFORE UPDATE ON deployments
WHEN OLD.status IN ('booted', 'failed', 'superseded')
  OR (OLD.status = 'succeeded' AND NEW.status NOT IN ('succeeded', 'booted', 'failed'))
BEGIN
  SELECT RAISE(ABORT, 'deployment already finished');
END;

-- A machine's BMC. The credentials (username and password) are sealed by kilnd (AES-256-GCM,
-- the key in the data directory, bound to the machine id): the store only keeps the ciphertext.
CREATE TABLE machine_bmcs (
  machine_id  INTEGER PRIMARY KEY REFERENCES machines (id),
  driver      TEXT    NOT NULL CHECK (driver IN ('redfish', 'ipmi')),
  address     TEXT    NOT NULL,
  credentials TEXT    NOT NULL,
  ca_file     TEXT    NOT NULL DEFAULT '',
  insecure    INTEGER NOT NULL DEFAULT 0 CHECK (insecure IN (0, 1)),
  system_id   TEXT    NOT NULL DEFAULT '',
  boot_mode   TEXT    NOT NULL DEFAULT 'auto' CHECK (boot_mode IN ('auto', 'uefi', 'legacy')),
  updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
