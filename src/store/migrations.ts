/**
 * Numbered, forward-only schema migrations. A migration is never edited once it has
 * shipped: a change is a new entry. `PRAGMA user_version` holds the number of the last
 * one applied, so a database written by a newer bootfleet is recognised and refused.
 */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

const NOW = "(strftime('%Y-%m-%dT%H:%M:%fZ','now'))";

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "initial schema",
    sql: `
CREATE TABLE users (
  id            INTEGER PRIMARY KEY,
  username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
  email         TEXT UNIQUE COLLATE NOCASE,
  full_name     TEXT NOT NULL DEFAULT '',
  role          TEXT NOT NULL CHECK (role IN ('admin','operator','viewer','client')),
  status        TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active','disabled')),
  password_hash TEXT NOT NULL,
  created_at    TEXT NOT NULL DEFAULT ${NOW},
  updated_at    TEXT NOT NULL DEFAULT ${NOW},
  last_login    TEXT
);

CREATE TABLE images (
  id                  INTEGER PRIMARY KEY,
  name                TEXT NOT NULL UNIQUE COLLATE NOCASE,
  description         TEXT NOT NULL DEFAULT '',
  filename            TEXT NOT NULL,
  format              TEXT NOT NULL DEFAULT 'raw'
                      CHECK (format IN ('raw','qcow2','vhd','vhdx','vmdk','vdi','unknown')),
  size_bytes          INTEGER NOT NULL DEFAULT 0,
  virtual_size_bytes  INTEGER NOT NULL DEFAULT 0,
  status              TEXT NOT NULL DEFAULT 'uploading'
                      CHECK (status IN ('uploading','processing','ready','error')),
  status_reason       TEXT,
  image_type          TEXT NOT NULL DEFAULT 'system'
                      CHECK (image_type IN ('system','game','data','template')),
  checksum_md5        TEXT,
  checksum_sha256     TEXT,
  current_version     INTEGER,
  created_by          INTEGER REFERENCES users(id) ON DELETE SET NULL,
  created_at          TEXT NOT NULL DEFAULT ${NOW},
  updated_at          TEXT NOT NULL DEFAULT ${NOW}
);

-- Versions of a golden image: a machine's overlay is cloned from one version, so an
-- update of the image never changes a disk under a booted machine, and rollback is a
-- pointer change.
CREATE TABLE image_versions (
  id              INTEGER PRIMARY KEY,
  image_id        INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  version         INTEGER NOT NULL,
  path            TEXT NOT NULL,
  size_bytes      INTEGER NOT NULL DEFAULT 0,
  checksum_sha256 TEXT,
  note            TEXT NOT NULL DEFAULT '',
  created_at      TEXT NOT NULL DEFAULT ${NOW},
  UNIQUE (image_id, version)
);

CREATE TABLE machines (
  id                  INTEGER PRIMARY KEY,
  name                TEXT NOT NULL UNIQUE COLLATE NOCASE,
  description         TEXT NOT NULL DEFAULT '',
  mac_address         TEXT NOT NULL UNIQUE,
  ip_address          TEXT,
  hostname            TEXT,
  boot_mode           TEXT NOT NULL DEFAULT 'uefi' CHECK (boot_mode IN ('bios','uefi')),
  secure_boot_enabled INTEGER NOT NULL DEFAULT 0 CHECK (secure_boot_enabled IN (0,1)),
  status              TEXT NOT NULL DEFAULT 'active'
                      CHECK (status IN ('discovered','active','inactive','maintenance','retired','error')),
  status_reason       TEXT,
  location            TEXT NOT NULL DEFAULT '',
  room                TEXT NOT NULL DEFAULT '',
  asset_tag           TEXT NOT NULL DEFAULT '',
  -- What the firmware told the proxy-DHCP: option 93, 97, 60.
  client_arch         INTEGER,
  client_uuid         TEXT,
  vendor_class        TEXT,
  -- How it boots: its iSCSI target, a menu, the local disk, a kernel, or an admin's script.
  boot_action         TEXT NOT NULL DEFAULT 'sanboot'
                      CHECK (boot_action IN ('sanboot','menu','local','kernel','custom','disabled')),
  boot_image_id       INTEGER REFERENCES images(id) ON DELETE SET NULL,
  custom_script       TEXT,
  overlay_policy      TEXT NOT NULL DEFAULT 'persistent' CHECK (overlay_policy IN ('persistent','reset')),
  owner_user_id       INTEGER REFERENCES users(id) ON DELETE SET NULL,
  bmc_address         TEXT,
  bmc_username        TEXT,
  bmc_password        TEXT,
  created_at          TEXT NOT NULL DEFAULT ${NOW},
  updated_at          TEXT NOT NULL DEFAULT ${NOW},
  first_seen          TEXT,
  last_seen           TEXT,
  last_boot           TEXT,
  boot_count          INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX machines_status ON machines(status);

CREATE TABLE targets (
  id                    INTEGER PRIMARY KEY,
  name                  TEXT NOT NULL UNIQUE COLLATE NOCASE,
  description           TEXT NOT NULL DEFAULT '',
  iqn                   TEXT NOT NULL UNIQUE,
  portal_ip             TEXT NOT NULL,
  portal_port           INTEGER NOT NULL DEFAULT 3260,
  target_type           TEXT NOT NULL DEFAULT 'system'
                        CHECK (target_type IN ('system','system_game','system_data')),
  status                TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending','active','inactive','error')),
  status_reason         TEXT,
  machine_id            INTEGER NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
  system_image_id       INTEGER NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
  system_image_version  INTEGER,
  extra_disk_image_id   INTEGER REFERENCES images(id) ON DELETE RESTRICT,
  extra_disk_mountpoint TEXT,
  initiator_iqn         TEXT NOT NULL,
  chap_username         TEXT NOT NULL,
  chap_password         TEXT NOT NULL,
  mutual_chap_username  TEXT,
  mutual_chap_password  TEXT,
  is_active             INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0,1)),
  created_at            TEXT NOT NULL DEFAULT ${NOW},
  updated_at            TEXT NOT NULL DEFAULT ${NOW},
  CHECK ((target_type = 'system') = (extra_disk_image_id IS NULL))
);
CREATE INDEX targets_machine ON targets(machine_id);

-- One row per boot of a machine, with a timestamp per phase, so an admin can see where
-- a slow boot spent its time.
CREATE TABLE boot_sessions (
  id                INTEGER PRIMARY KEY,
  session_id        TEXT NOT NULL UNIQUE,
  session_type      TEXT NOT NULL DEFAULT 'diskless_boot',
  status            TEXT NOT NULL DEFAULT 'starting'
                    CHECK (status IN ('starting','active','stopping','stopped','error')),
  machine_id        INTEGER NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
  target_id         INTEGER REFERENCES targets(id) ON DELETE SET NULL,
  client_ip         TEXT,
  server_ip         TEXT,
  boot_method       TEXT,
  started_at        TEXT NOT NULL DEFAULT ${NOW},
  ended_at          TEXT,
  dhcp_offer_at     TEXT,
  tftp_done_at      TEXT,
  tftp_file         TEXT,
  tftp_bytes        INTEGER,
  tftp_duration_ms  INTEGER,
  script_served_at  TEXT,
  iscsi_login_at    TEXT,
  iscsi_logout_at   TEXT,
  error             TEXT
);
CREATE INDEX boot_sessions_machine ON boot_sessions(machine_id, started_at);
CREATE INDEX boot_sessions_status ON boot_sessions(status);

CREATE TABLE jobs (
  id          INTEGER PRIMARY KEY,
  type        TEXT NOT NULL,
  status      TEXT NOT NULL DEFAULT 'queued'
              CHECK (status IN ('queued','running','succeeded','failed','cancelled')),
  progress    REAL NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 100),
  steps       TEXT NOT NULL DEFAULT '[]',
  params      TEXT NOT NULL DEFAULT '{}',
  result      TEXT,
  error       TEXT,
  created_by  INTEGER REFERENCES users(id) ON DELETE SET NULL,
  created_at  TEXT NOT NULL DEFAULT ${NOW},
  started_at  TEXT,
  finished_at TEXT,
  updated_at  TEXT NOT NULL DEFAULT ${NOW}
);
CREATE INDEX jobs_status ON jobs(status);

CREATE TABLE job_logs (
  id      INTEGER PRIMARY KEY,
  job_id  INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  at      TEXT NOT NULL DEFAULT ${NOW},
  level   TEXT NOT NULL DEFAULT 'info' CHECK (level IN ('debug','info','warn','error')),
  message TEXT NOT NULL
);
CREATE INDEX job_logs_job ON job_logs(job_id, id);

-- Every state-changing request and boot event: who, what, when, result, duration.
CREATE TABLE history_events (
  id            INTEGER PRIMARY KEY,
  at            TEXT NOT NULL DEFAULT ${NOW},
  request_id    TEXT,
  user_id       INTEGER REFERENCES users(id) ON DELETE SET NULL,
  username      TEXT,
  resource_type TEXT NOT NULL,
  resource_id   TEXT,
  operation     TEXT NOT NULL,
  status        TEXT NOT NULL CHECK (status IN ('success','failure')),
  duration_ms   INTEGER,
  machine_id    INTEGER REFERENCES machines(id) ON DELETE SET NULL,
  detail        TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX history_at ON history_events(at);
CREATE INDEX history_resource ON history_events(resource_type, resource_id);
`,
  },
  {
    version: 2,
    name: "login sessions (refresh-token families) and history look-ups",
    sql: `
-- One row per login: the family of its rotating refresh tokens. Only refresh_jti may be
-- exchanged; presenting an older one of the family means it was stolen and replayed, so
-- the whole family is revoked. Access tokens carry the family id and die with it.
CREATE TABLE auth_sessions (
  id             TEXT PRIMARY KEY,
  user_id        INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  refresh_jti    TEXT NOT NULL,
  created_at     TEXT NOT NULL DEFAULT ${NOW},
  last_used_at   TEXT NOT NULL DEFAULT ${NOW},
  expires_at     TEXT NOT NULL,
  revoked_at     TEXT,
  revoked_reason TEXT,
  client_ip      TEXT
);
CREATE INDEX auth_sessions_user ON auth_sessions(user_id);

CREATE INDEX history_user ON history_events(user_id, at);
CREATE INDEX history_machine ON history_events(machine_id, at);
`,
  },
  {
    version: 3,
    name: "overlay usage per target",
    sql: `
-- What each machine's overlay holds of its own (bytes written since it was cloned), read
-- from the overlay driver now and then, so admins see who writes how much.
ALTER TABLE targets ADD COLUMN overlay_allocated_bytes INTEGER;
ALTER TABLE targets ADD COLUMN overlay_unique_bytes INTEGER;
ALTER TABLE targets ADD COLUMN overlay_usage_at TEXT;
ALTER TABLE targets ADD COLUMN overlay_reset_at TEXT;
`,
  },
  {
    version: 7,
    name: "failed logins per account",
    sql: `
-- Consecutive failed logins of an account and until when it is locked out: a password
-- guesser spread over many addresses still slows down to a few tries an hour. Kept in
-- the database so a restart does not reset the back-off.
ALTER TABLE users ADD COLUMN failed_logins INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN login_locked_until TEXT;
`,
  },
];

export const LATEST_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;
