-- Rollouts (docs/rollouts.md): one image version rolled across the machines a selector matched,
-- in batches (a canary batch first), each batch gated by its machines' confirmed boots.
--
-- The plan is fixed when the rollout is made: every matched machine gets a row with its batch
-- (0 = the canary batch, when there is one) and what it ran before. The engine (provision's
-- RolloutService) only moves rows forward, each move in one transaction with the deployment it
-- starts, so a kilnd killed at any moment resumes from exactly what was committed.
CREATE TABLE rollouts (
  id               INTEGER PRIMARY KEY,
  selector         TEXT    NOT NULL,
  image_version_id INTEGER NOT NULL REFERENCES image_versions (id),
  batch_count      INTEGER,                         -- exactly one of count / percent
  batch_percent    INTEGER,
  batch_size       INTEGER NOT NULL CHECK (batch_size >= 1),  -- resolved at creation
  canary           INTEGER NOT NULL DEFAULT 0 CHECK (canary >= 0),
  max_unavailable  INTEGER NOT NULL CHECK (max_unavailable >= 1),
  max_failures     INTEGER NOT NULL DEFAULT 0 CHECK (max_failures >= 0),
  on_failure       TEXT    NOT NULL CHECK (on_failure IN ('pause', 'rollback', 'stop')),
  gate             TEXT    NOT NULL CHECK (gate IN ('booted', 'written')),
  gate_timeout_s   INTEGER NOT NULL CHECK (gate_timeout_s >= 1),
  pause_between_s  INTEGER NOT NULL DEFAULT 0 CHECK (pause_between_s >= 0),
  spread_by        TEXT,
  config           BLOB,                            -- sealed configuration layer (optional)
  config_sha256    TEXT,
  state            TEXT    NOT NULL
                   CHECK (state IN ('pending', 'running', 'paused', 'succeeded', 'failed',
                                    'aborted', 'rolling_back', 'rolled_back')),
  reason           TEXT    NOT NULL DEFAULT '',
  failure_base     INTEGER NOT NULL DEFAULT 0,      -- failures acknowledged by a resume
  requested_by     TEXT    NOT NULL,
  created_at       INTEGER NOT NULL,
  started_at       INTEGER,
  finished_at      INTEGER,
  updated_at       INTEGER NOT NULL
);
CREATE INDEX rollouts_by_state ON rollouts (state);

CREATE TABLE rollout_machines (
  rollout_id       INTEGER NOT NULL REFERENCES rollouts (id),
  machine_id       INTEGER NOT NULL REFERENCES machines (id),
  position         INTEGER NOT NULL,               -- order of deployment within the rollout
  batch            INTEGER NOT NULL,               -- 0 = the canary batch when canary > 0
  state            TEXT    NOT NULL
                   CHECK (state IN ('pending', 'skipped', 'deploying', 'done', 'failed',
                                    'rolling_back', 'rolled_back', 'rollback_failed')),
  reason           TEXT    NOT NULL DEFAULT '',
  previous_version_id INTEGER REFERENCES image_versions (id),  -- what it ran before
  deployment_id    INTEGER REFERENCES deployments (id),
  rollback_deployment_id INTEGER REFERENCES deployments (id),
  started_at       INTEGER,
  finished_at      INTEGER,
  PRIMARY KEY (rollout_id, machine_id)
);
CREATE INDEX rollout_machines_by_state ON rollout_machines (rollout_id, state, batch);
CREATE INDEX rollout_machines_by_machine ON rollout_machines (machine_id, state);
