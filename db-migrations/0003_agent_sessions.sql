-- Agent credentials bound at first use, and discovery by approval (docs/security.md).
--
-- A deployment's boot ticket is printed into its iPXE script. It is not a secret (whoever can
-- fetch the script sees it): it is good only for opening the deployment's agent session, and
-- the first session binds the deployment to the address it came from. Later sessions (the
-- machine rebooted) must come from that address; each one counts as an agent boot. The session
-- token itself is stored as a hash in agent_token_hash (0001).
ALTER TABLE deployments ADD COLUMN agent_ticket TEXT;
ALTER TABLE deployments ADD COLUMN agent_ticket_expires_at INTEGER;
ALTER TABLE deployments ADD COLUMN agent_address TEXT;
ALTER TABLE deployments ADD COLUMN agent_boots INTEGER NOT NULL DEFAULT 0;
-- When this deployment's manifest was first served to its agent session (proof of success).
ALTER TABLE deployments ADD COLUMN manifest_served_at INTEGER;
CREATE UNIQUE INDEX deployments_agent_ticket ON deployments (agent_ticket)
  WHERE agent_ticket IS NOT NULL;

-- boot.discovery = approve: a machine registered by its first PXE boot waits (approved = 0)
-- until an operator approves it. Machines registered any other way are approved.
ALTER TABLE machines ADD COLUMN approved INTEGER NOT NULL DEFAULT 1 CHECK (approved IN (0, 1));

-- An external (raw URL) image's Ed25519 signature (hex) over external_signing_message(): with
-- images.trusted_keys set, kilnd registers only signed ones, and an agent with a baked-in key
-- writes only signed ones.
ALTER TABLE image_versions ADD COLUMN signature TEXT;
