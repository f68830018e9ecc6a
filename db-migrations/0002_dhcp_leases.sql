-- DHCP leases (authoritative mode). One row per address; the DHCP server keeps the table in
-- memory and writes changed rows in batches (group commit) before it answers with an ACK.
CREATE TABLE dhcp_leases (
  ip         TEXT    PRIMARY KEY,                 -- dotted quad
  client     TEXT    NOT NULL,                    -- "id:<hex of option 61>" or the MAC
  mac        TEXT    NOT NULL,
  hostname   TEXT    NOT NULL DEFAULT '',
  state      TEXT    NOT NULL CHECK (state IN ('offered', 'bound', 'released', 'declined')),
  expires_at INTEGER NOT NULL,                    -- ms since the epoch
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX dhcp_leases_client ON dhcp_leases (client);

-- A machine's reserved IPv4 address: authoritative DHCP gives it to this machine only.
ALTER TABLE machines ADD COLUMN ipv4 TEXT;
CREATE UNIQUE INDEX machines_ipv4 ON machines (ipv4) WHERE ipv4 IS NOT NULL AND deleted_at IS NULL;
