import Database from "better-sqlite3";
import { LATEST_VERSION, MIGRATIONS, type Migration } from "./migrations.js";

export type Db = Database.Database;

/** A store that cannot be opened, with a message meant for the admin (no stack trace). */
export class StoreError extends Error {
  override name = "StoreError";
}

export interface OpenStoreOptions {
  path: string;
  /** How long to wait for another process's lock before giving up. */
  busyTimeoutMs: number;
  /** For tests of older schemas; production always applies them all. */
  migrations?: readonly Migration[];
  readonly?: boolean;
}

/**
 * Opens the database: WAL (readers never block the daemon's writer), foreign keys on,
 * integrity checked, and every pending migration applied, each in its own transaction.
 * Every failure an admin can meet (corrupt file, lock held by another process, schema
 * from a newer version, permissions) becomes a StoreError naming the file and the fix.
 */
export function openStore(opts: OpenStoreOptions): Db {
  const migrations = opts.migrations ?? MIGRATIONS;
  const latest = migrations.length ? migrations[migrations.length - 1]!.version : 0;
  let db: Db | undefined;
  try {
    db = new Database(opts.path, { timeout: opts.busyTimeoutMs, readonly: opts.readonly ?? false });
    if (!opts.readonly) db.pragma("journal_mode = WAL");
    db.pragma("foreign_keys = ON");
    db.pragma("synchronous = NORMAL");
    const version = db.pragma("user_version", { simple: true }) as number;
    if (version > LATEST_VERSION || version > latest) {
      throw new StoreError(
        `database ${opts.path} was written by a newer bootfleet (schema version ${version}; this version knows up to ${latest}). Upgrade bootfleet, or restore a backup of the database made by this version.`,
      );
    }
    const check = db.pragma("quick_check", { simple: true });
    if (check !== "ok") {
      throw new StoreError(
        `database ${opts.path} is corrupt (integrity check: ${String(check)}). Restore it from a backup, or move it away to start with an empty one.`,
      );
    }
    for (const m of migrations) {
      if (m.version <= version) continue;
      const conn = db;
      // The pragma is a no-op inside a transaction, so it is switched around it.
      if (m.foreignKeysOff) conn.pragma("foreign_keys = OFF");
      try {
        conn
          .transaction(() => {
            if (m.sql) conn.exec(m.sql);
            m.run?.(conn);
            if (m.foreignKeysOff) {
              const broken = conn.pragma("foreign_key_check") as unknown[];
              if (broken.length) {
                throw new StoreError(
                  `migration ${m.version} (${m.name}) would break ${broken.length} reference(s) between tables of ${opts.path}; nothing was changed`,
                );
              }
            }
            conn.pragma(`user_version = ${m.version}`);
          })
          .immediate();
      } finally {
        if (m.foreignKeysOff) conn.pragma("foreign_keys = ON");
      }
    }
    return db;
  } catch (err) {
    db?.close();
    throw toStoreError(err, opts.path);
  }
}

function toStoreError(err: unknown, path: string): StoreError {
  if (err instanceof StoreError) return err;
  const e = err as { code?: string; message?: string };
  const code = e.code ?? "";
  if (code === "SQLITE_BUSY" || code.startsWith("SQLITE_BUSY_") || code === "SQLITE_LOCKED") {
    return new StoreError(
      `database ${path} is locked by another process (is another bootfleetd running?). Stop it, or point data_dir elsewhere.`,
    );
  }
  if (code === "SQLITE_NOTADB" || code === "SQLITE_CORRUPT" || code.startsWith("SQLITE_CORRUPT_")) {
    return new StoreError(
      `database ${path} is corrupt or not a bootfleet database (${e.message}). Restore it from a backup, or move it away to start with an empty one.`,
    );
  }
  if (
    code === "SQLITE_CANTOPEN" ||
    code === "SQLITE_READONLY" ||
    code.startsWith("SQLITE_CANTOPEN_")
  ) {
    return new StoreError(
      `cannot open database ${path} (${e.message}): check that its folder exists and is writable by this user.`,
    );
  }
  if (code === "SQLITE_FULL") {
    return new StoreError(`cannot write database ${path}: the disk is full.`);
  }
  return new StoreError(`cannot open database ${path}: ${e.message ?? String(err)}`);
}
