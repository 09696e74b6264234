import type Database from "better-sqlite3";

/**
 * Numbered, forward-only schema migrations. A migration is never edited once it has
 * shipped: a change is a new entry. `PRAGMA user_version` holds the number of the last
 * one applied, so a database written by a newer bootfleet is recognised and refused.
 */
export interface Migration {
  version: number;
  name: string;
  /** SQL run in the migration's transaction. */
  sql?: string;
  /** Code run in the migration's transaction, after `sql`, for steps SQL text cannot say. */
  run?: (db: Database.Database) => void;
  /**
   * Run with foreign-key enforcement off (and checked before commit): rebuilding a table
   * drops it, and with enforcement on the drop would cascade into every row referring to it.
   */
  foreignKeysOff?: boolean;
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
    version: 4,
    name: "image versions, updates (super-client drafts) and the version of each overlay",
    sql: `
-- Who made a version (its comment is the existing note column).
ALTER TABLE image_versions ADD COLUMN created_by INTEGER REFERENCES users(id) ON DELETE SET NULL;

-- An update of an image: one machine (the super-client) boots a writable draft overlay of
-- base_version; committing it makes the draft the next version. At most one open per image.
CREATE TABLE image_updates (
  id                INTEGER PRIMARY KEY,
  image_id          INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  machine_id        INTEGER NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
  base_version      INTEGER NOT NULL,
  status            TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open','committed','discarded')),
  draft_overlay     TEXT NOT NULL,
  draft_booted_at   TEXT,
  comment           TEXT NOT NULL DEFAULT '',
  committed_version INTEGER,
  created_by        INTEGER REFERENCES users(id) ON DELETE SET NULL,
  created_at        TEXT NOT NULL DEFAULT ${NOW},
  updated_at        TEXT NOT NULL DEFAULT ${NOW},
  closed_at         TEXT
);
CREATE UNIQUE INDEX image_updates_one_open ON image_updates(image_id) WHERE status = 'open';
CREATE INDEX image_updates_image ON image_updates(image_id, id);

-- The version a target's system overlay was cloned from (persistent machines fall behind
-- as new versions are committed); targets.system_image_version pins one (NULL follows).
ALTER TABLE targets ADD COLUMN overlay_version INTEGER;

-- Images imported before versions existed: their first version is current.
UPDATE images SET current_version =
  (SELECT min(v.version) FROM image_versions v WHERE v.image_id = images.id)
  WHERE current_version IS NULL
    AND EXISTS (SELECT 1 FROM image_versions v WHERE v.image_id = images.id);
UPDATE targets SET overlay_version =
  (SELECT i.current_version FROM images i WHERE i.id = targets.system_image_id);
`,
  },
  {
    version: 5,
    name: "fleet: alerts, locations (rooms), first I/O of a boot",
    sql: `
-- Rooms: a machine is in one or none. Deleting a room is refused while machines are in it
-- (the API answers 409), so no machine is moved without someone deciding where.
CREATE TABLE locations (
  id          INTEGER PRIMARY KEY,
  name        TEXT NOT NULL UNIQUE COLLATE NOCASE,
  description TEXT NOT NULL DEFAULT '',
  created_at  TEXT NOT NULL DEFAULT ${NOW},
  updated_at  TEXT NOT NULL DEFAULT ${NOW}
);
ALTER TABLE machines ADD COLUMN location_id INTEGER REFERENCES locations(id) ON DELETE RESTRICT;
CREATE INDEX machines_location ON machines(location_id);

-- Something an admin should look at. One active (unresolved) alert per cause per machine:
-- a stall seen again refreshes last_seen_at and count instead of adding a row.
CREATE TABLE alerts (
  id              INTEGER PRIMARY KEY,
  cause           TEXT NOT NULL,
  severity        TEXT NOT NULL CHECK (severity IN ('info','warning','critical')),
  machine_id      INTEGER REFERENCES machines(id) ON DELETE CASCADE,
  message         TEXT NOT NULL,
  detail          TEXT NOT NULL DEFAULT '{}',
  count           INTEGER NOT NULL DEFAULT 1,
  created_at      TEXT NOT NULL DEFAULT ${NOW},
  last_seen_at    TEXT NOT NULL DEFAULT ${NOW},
  resolved_at     TEXT,
  acknowledged_at TEXT,
  acknowledged_by INTEGER REFERENCES users(id) ON DELETE SET NULL
);
-- The dedupe key: machine 0 stands for "no machine" (disk reserve, a failed job).
CREATE UNIQUE INDEX alerts_active_cause ON alerts(cause, coalesce(machine_id, 0)) WHERE resolved_at IS NULL;
CREATE INDEX alerts_machine ON alerts(machine_id, created_at);

-- When the target first served I/O in this boot (the driver's read counters rose).
ALTER TABLE boot_sessions ADD COLUMN io_seen_at TEXT;
`,
  },
  {
    version: 6,
    name: "identities are never reused (AUTOINCREMENT)",
    foreignKeysOff: true,
    run: (db) => {
      for (const table of IDENTITY_TABLES) addAutoincrement(db, table);
    },
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
  {
    version: 8,
    name: "writeback snapshots of targets, files waiting for deletion, extra disk versions",
    sql: `
-- A snapshot of a persistent machine's writeback: a clone of its system overlay (a reflink
-- file or a thin LV) taken with a comment; restoring it clones it back over the overlay.
-- image_version is the version the overlay rested on when the snapshot was taken.
CREATE TABLE target_snapshots (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  target_id     INTEGER NOT NULL REFERENCES targets(id) ON DELETE CASCADE,
  image_id      INTEGER NOT NULL,
  image_version INTEGER,
  path          TEXT NOT NULL,
  size_bytes    INTEGER NOT NULL DEFAULT 0,
  comment       TEXT NOT NULL DEFAULT '',
  created_by    INTEGER REFERENCES users(id) ON DELETE SET NULL,
  created_at    TEXT NOT NULL DEFAULT ${NOW},
  updated_at    TEXT NOT NULL DEFAULT ${NOW}
);
CREATE INDEX target_snapshots_target ON target_snapshots(target_id, id);

-- The version of the extra disk image a target's extra LUN serves (games disk, read-only)
-- or its data overlay was cloned from: a commit of the games image never swaps the disk
-- under a running PC, and retention keeps it.
ALTER TABLE targets ADD COLUMN extra_overlay_version INTEGER;

-- Files (or LVs) whose row is gone and whose bytes must go too: a deleted snapshot, or
-- every snapshot of a deleted target or machine (the cascade fires the trigger), so no
-- snapshot is ever left on disk without a row. The iSCSI side drains it.
CREATE TABLE storage_garbage (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  path       TEXT NOT NULL,
  reason     TEXT NOT NULL,
  attempts   INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  created_at TEXT NOT NULL DEFAULT ${NOW}
);
CREATE TRIGGER target_snapshots_to_garbage AFTER DELETE ON target_snapshots
BEGIN
  INSERT INTO storage_garbage (path, reason)
  VALUES (old.path, 'snapshot ' || old.id || ' of target ' || old.target_id);
END;
`,
  },
  {
    version: 9,
    name: "boot menus: default target, time-out and local-disk entry",
    sql: `
-- A machine with several targets boots through a menu. Its default entry is a machine
-- field (one default per machine by construction; deleting that target clears it). The
-- time-out and the "boot from the local disk" entry are set on the machine, else on its
-- room (NULL: not set there), else the time-out is [netboot] menu_timeout_seconds.
ALTER TABLE machines ADD COLUMN default_target_id INTEGER REFERENCES targets(id) ON DELETE SET NULL;
ALTER TABLE machines ADD COLUMN menu_timeout_seconds INTEGER;
ALTER TABLE machines ADD COLUMN menu_local_disk INTEGER;
ALTER TABLE locations ADD COLUMN menu_timeout_seconds INTEGER;
ALTER TABLE locations ADD COLUMN menu_local_disk INTEGER;
`,
  },
  {
    version: 10,
    name: "a boot's later iSCSI logins on its session",
    sql: `
-- One boot logs in to its disk more than once: iPXE's login, then the booted OS's own
-- (the initramfs, then iscsid at start-up). They are one boot, so one session: it counts
-- its logins and stamps the latest one after the first (the OS taking over its disk).
ALTER TABLE boot_sessions ADD COLUMN iscsi_logins INTEGER NOT NULL DEFAULT 0;
ALTER TABLE boot_sessions ADD COLUMN iscsi_relogin_at TEXT;
`,
  },
];

/**
 * Tables whose ids name something outside the database: a target's id names its overlay
 * (t<id>-system), a machine's and an image's are recorded with that overlay as its owner.
 * With a plain INTEGER PRIMARY KEY, SQLite hands the largest id out again once its row is
 * deleted, and a new target would adopt the disk of the deleted one.
 */
const IDENTITY_TABLES = ["machines", "images", "image_versions", "targets"] as const;

/**
 * Rebuilds a table with `id INTEGER PRIMARY KEY AUTOINCREMENT`, keeping its rows, ids,
 * indexes and the columns later migrations added: the new definition is the current one
 * read back from sqlite_master, so this works whatever came before it. sqlite_sequence
 * starts at the largest id present (ids deleted before this migration cannot be known).
 */
function addAutoincrement(db: Database.Database, table: string): void {
  const def = db
    .prepare("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?")
    .get(table) as { sql: string } | undefined;
  if (!def) throw new Error(`migration 6: table ${table} is missing`);
  if (/AUTOINCREMENT/i.test(def.sql)) return;
  const pk = /\bid\s+INTEGER\s+PRIMARY\s+KEY\b/i;
  if (!pk.test(def.sql)) throw new Error(`migration 6: ${table} has no "id INTEGER PRIMARY KEY"`);
  const tmp = `${table}__rebuild`;
  const createTmp = def.sql
    .replace(pk, "id INTEGER PRIMARY KEY AUTOINCREMENT")
    .replace(/^CREATE TABLE\s+("?)\w+\1/i, `CREATE TABLE ${tmp}`);
  const extras = db
    .prepare(
      "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type IN ('index','trigger') AND sql IS NOT NULL",
    )
    .all(table) as { sql: string }[];
  db.exec(createTmp);
  db.exec(`INSERT INTO ${tmp} SELECT * FROM ${table}`);
  db.exec(`DROP TABLE ${table}`);
  db.exec(`ALTER TABLE ${tmp} RENAME TO ${table}`);
  for (const e of extras) db.exec(e.sql);
}

export const LATEST_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;
