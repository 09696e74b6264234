import type { Statement } from "better-sqlite3";
import type { Logger } from "pino";
import type { Db } from "./db.js";

/**
 * The daemon's WAL checkpoints, moved out of its busy seconds.
 *
 * SQLite checkpoints inside the commit that takes the WAL past 1,000 pages: the copy of the
 * WAL into the database file and its two fsyncs run in that commit, on the daemon's one
 * thread, between a DHCP reply and the next TFTP block. In a 500-PC boot storm that was
 * 480 ms of the busiest 3.5 s (bench/storm). Here automatic checkpoints are off on the
 * daemon's connection but past 64 MiB of WAL (a net for a write this cannot see, and a bound
 * on one checkpoint's stall); a checkpoint runs once the connection has written nothing for
 * `quietMs`, or at the latest `maxDeferMs` after the first write not yet checkpointed (which
 * bounds what a power loss could take with `synchronous = NORMAL`: a commit is only on disk
 * once a checkpoint has synced the WAL). Writes are seen through total_changes(): rows
 * inserted, updated or deleted, which is every write the daemon makes after its migrations
 * (those are counted pending from the start). Other processes (the bootfleet command) keep
 * SQLite's own checkpoints on their connections.
 */
export interface WalCheckpointOptions {
  /** A checkpoint once nothing was written for this long. Default 2 s. */
  quietMs?: number;
  /** And at the latest this long after the first write it has not checkpointed. Default 60 s. */
  maxDeferMs?: number;
  now?: () => number;
  log?: Logger;
}

export interface CheckpointResult {
  /** WAL frames at the checkpoint. */
  frames: number;
  /** Of those, copied into the database (fewer when a reader still needs the older ones). */
  copied: number;
  ms: number;
}

/** SQLite's default `wal_autocheckpoint`, put back on stop. */
const SQLITE_AUTOCHECKPOINT_PAGES = 1000;
/** While deferred: SQLite's own checkpoint only past this many pages (64 MiB of 4 KiB). */
const DEFERRED_AUTOCHECKPOINT_PAGES = 16_384;
/** The WAL file is cut back to this size after a checkpoint lets it start over. */
const WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024;
/** After a failed checkpoint (a full disk), the next try waits this long. */
const RETRY_AFTER_FAILURE_MS = 30_000;

export class WalCheckpoints {
  readonly #db: Db;
  readonly #changes: Statement;
  readonly #quietMs: number;
  readonly #maxDeferMs: number;
  readonly #now: () => number;
  readonly #log: Logger | undefined;
  #timer: NodeJS.Timeout | undefined;
  #seenChanges: number;
  #lastWriteAt = 0;
  /** When the first write not yet checkpointed was seen; undefined: none. */
  #pendingSince: number | undefined;
  /** When the last checkpoint failed, while they keep failing; undefined: the last one did not. */
  #failedAt: number | undefined;

  constructor(db: Db, o: WalCheckpointOptions = {}) {
    this.#db = db;
    // total_changes(): rows this connection wrote; a function call, no read of the database.
    this.#changes = db.prepare("SELECT total_changes()").pluck();
    this.#quietMs = o.quietMs ?? 2000;
    this.#maxDeferMs = o.maxDeferMs ?? 60_000;
    this.#now = o.now ?? Date.now;
    this.#log = o.log;
    this.#seenChanges = this.#changes.get() as number;
    // The migrations' writes, or a previous process's WAL, are not counted: pending from now.
    this.#pendingSince = this.#now();
    this.#lastWriteAt = this.#pendingSince;
  }

  /** Defers SQLite's checkpoints on this connection and looks every `everyMs`. */
  start(everyMs = 500): void {
    this.#db.pragma(`wal_autocheckpoint = ${DEFERRED_AUTOCHECKPOINT_PAGES}`);
    this.#db.pragma(`journal_size_limit = ${WAL_SIZE_LIMIT_BYTES}`);
    this.#timer = setInterval(() => this.tick(), everyMs);
    this.#timer.unref();
  }

  /**
   * One look: notes a write since the last look, and checkpoints when the connection has
   * been quiet long enough or a write has waited too long. Returns what a checkpoint did.
   */
  tick(): CheckpointResult | undefined {
    if (!this.#db.open) return undefined;
    const now = this.#now();
    const changes = this.#changes.get() as number;
    if (changes !== this.#seenChanges) {
      this.#seenChanges = changes;
      this.#lastWriteAt = now;
      this.#pendingSince ??= now;
    }
    if (this.#pendingSince === undefined) return undefined;
    const quiet = now - this.#lastWriteAt >= this.#quietMs;
    const overdue = now - this.#pendingSince >= this.#maxDeferMs;
    if (!quiet && !overdue) return undefined;
    if (this.#failedAt !== undefined && now - this.#failedAt < RETRY_AFTER_FAILURE_MS) {
      return undefined;
    }
    return this.checkpoint();
  }

  /**
   * A PASSIVE checkpoint now: it waits for no reader or writer; frames a reader still needs
   * stay in the WAL and are left pending for the next one, as is all of it when another
   * connection was checkpointing (SQLite then answers busy, -1 frames).
   */
  checkpoint(): CheckpointResult {
    const started = performance.now();
    let frames = 0;
    let copied = 0;
    let busy = false;
    try {
      const [row] = this.#db.pragma("wal_checkpoint(PASSIVE)") as {
        busy: number;
        log: number;
        checkpointed: number;
      }[];
      frames = row?.log ?? 0;
      copied = row?.checkpointed ?? 0;
      busy = row?.busy === 1 || frames < 0;
    } catch (err) {
      // A full disk or an I/O error: the WAL keeps every commit; tried again in 30 s,
      // logged once until one succeeds.
      if (this.#failedAt === undefined) {
        this.#log?.warn(
          { err, retry_seconds: RETRY_AFTER_FAILURE_MS / 1000 },
          "WAL checkpoint failed: the commits stay in the WAL file; retrying",
        );
      }
      this.#failedAt = this.#now();
      return { frames, copied, ms: performance.now() - started };
    }
    if (this.#failedAt !== undefined) {
      this.#failedAt = undefined;
      this.#log?.info({ frames, copied }, "WAL checkpoint succeeded again");
    }
    if (busy || copied < frames) {
      // Again once another quiet spell has passed, not on every look.
      this.#pendingSince = this.#now();
      this.#lastWriteAt = this.#pendingSince;
    } else {
      this.#pendingSince = undefined;
    }
    const ms = performance.now() - started;
    this.#log?.debug({ frames, copied, ms: Math.round(ms) }, "WAL checkpoint");
    return { frames, copied, ms };
  }

  /** Stops looking; what is not checkpointed yet is, and SQLite's own checkpoints return. */
  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    if (!this.#db.open) return;
    if (this.#pendingSince !== undefined || this.#changes.get() !== this.#seenChanges) {
      this.checkpoint();
    }
    this.#db.pragma(`wal_autocheckpoint = ${SQLITE_AUTOCHECKPOINT_PAGES}`);
  }
}
