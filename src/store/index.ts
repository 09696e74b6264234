import type Database from "better-sqlite3";
import { AlertsRepo } from "./alerts.js";
import { AuthSessionsRepo } from "./auth-sessions.js";
import { type Db, type OpenStoreOptions, openStore } from "./db.js";
import { HistoryRepo } from "./history.js";
import { ImageUpdatesRepo, ImageVersionsRepo } from "./image-versions.js";
import { ImagesRepo } from "./images.js";
import { JobsRepo } from "./jobs.js";
import { LocationsRepo } from "./locations.js";
import { MachinesRepo } from "./machines.js";
import { PendingOffers } from "./pending-offers.js";
import { SessionsRepo } from "./sessions.js";
import { StorageGarbageRepo, TargetSnapshotsRepo } from "./target-snapshots.js";
import { TargetsRepo } from "./targets.js";
import { UsersRepo } from "./users.js";

export { StoreError } from "./db.js";

/** The one source of truth for desired state: the database and its typed repositories. */
export class Store {
  readonly users: UsersRepo;
  readonly machines: MachinesRepo;
  readonly images: ImagesRepo;
  readonly targets: TargetsRepo;
  readonly sessions: SessionsRepo;
  readonly jobs: JobsRepo;
  readonly history: HistoryRepo;
  readonly authSessions: AuthSessionsRepo;
  readonly alerts: AlertsRepo;
  readonly locations: LocationsRepo;
  readonly imageVersions: ImageVersionsRepo;
  readonly imageUpdates: ImageUpdatesRepo;
  readonly targetSnapshots: TargetSnapshotsRepo;
  readonly storageGarbage: StorageGarbageRepo;
  /** The proxy-DHCP's offers and sightings, written behind its replies (see pending-offers.ts). */
  readonly pendingOffers: PendingOffers;
  readonly #changes: Database.Statement;
  readonly #dataVersion: Database.Statement;
  /** data_version as read in this turn of the event loop (undefined: not read yet). */
  #version: number | undefined;

  constructor(
    readonly db: Db,
    clock: () => number = Date.now,
  ) {
    // One transaction for both: a transaction costs more than the rows it writes.
    this.pendingOffers = new PendingOffers(db, (entries, seen) => {
      try {
        db.transaction(() => {
          this.machines.writeSeen(seen);
          if (entries.length > 0) this.sessions.recordTimeline(entries);
        })();
      } catch (err) {
        // Rolled back: the MAC index was told of last_seen values that were not written.
        this.machines.seenWriteFailed();
        throw err;
      }
    });
    const pendingWrites = () => {
      this.pendingOffers.flush();
    };
    this.users = new UsersRepo(db, clock);
    this.machines = new MachinesRepo(db, clock, pendingWrites, this.pendingOffers, () =>
      this.#turnDataVersion(),
    );
    this.images = new ImagesRepo(db, clock);
    this.targets = new TargetsRepo(db, clock);
    this.sessions = new SessionsRepo(db, clock, pendingWrites);
    this.jobs = new JobsRepo(db, clock);
    this.history = new HistoryRepo(db, clock);
    this.authSessions = new AuthSessionsRepo(db, clock);
    this.alerts = new AlertsRepo(db, clock);
    this.locations = new LocationsRepo(db, clock);
    this.imageVersions = new ImageVersionsRepo(db, clock);
    this.imageUpdates = new ImageUpdatesRepo(db, clock);
    this.targetSnapshots = new TargetSnapshotsRepo(db, clock);
    this.storageGarbage = new StorageGarbageRepo(db);
    // total_changes(): rows this connection inserted, updated or deleted (triggers too); a
    // function call, no read of the database (~0.1 µs).
    this.#changes = db.prepare("SELECT total_changes()").pluck();
    // data_version: bumped when another connection (the bootfleet command, a second
    // process) commits. It reads the WAL index like any query (~10 µs on the loaded VM).
    this.#dataVersion = db.prepare("PRAGMA data_version").pluck();
  }

  /**
   * A value that changes whenever anything was written to the database: what was read or
   * built from the store can be kept while it stays equal (the API's verified tokens and
   * list answers). This process's writes count at once; another process's commit counts
   * from the next turn of the event loop on (data_version is read once per turn: several
   * requests of one turn, all received before it, share the read). A rolled-back write
   * changes it too, which only costs a rebuild. Offers waiting to be written are written
   * first: they are this process's writes.
   */
  generation(): string {
    this.pendingOffers.flush();
    return `${this.#changes.get() as number}.${this.#turnDataVersion()}`;
  }

  /**
   * data_version as read in this turn of the event loop: another connection's commit counts
   * from the next turn on (the API's cached answers, the proxy-DHCP's MAC index).
   */
  #turnDataVersion(): number {
    if (this.#version === undefined) {
      this.#version = this.#dataVersion.get() as number;
      setImmediate(() => {
        this.#version = undefined;
      });
    }
    return this.#version;
  }

  static open(opts: OpenStoreOptions, clock?: () => number): Store {
    return new Store(openStore(opts), clock);
  }

  /**
   * Runs fn in one transaction: every multi-row change goes through here. The offers
   * waiting to be written are written before it begins: what fn reads includes them, and
   * a rollback of fn does not take them with it.
   */
  transaction<T>(fn: () => T): T {
    this.pendingOffers.flush();
    return this.db.transaction(fn)();
  }

  /** Quick liveness probe for health checks. */
  ping(): boolean {
    return (this.db.prepare("SELECT 1 AS ok").get() as { ok: number }).ok === 1;
  }

  /** A clean stop: the offers waiting to be written are written first. */
  close(): void {
    this.pendingOffers.close();
    if (this.db.open) this.db.close();
  }
}
