import type Database from "better-sqlite3";
import type { Db } from "./db.js";
import { type ListPage, type ListQuery, sortColumns } from "./list.js";
import { type BootViewRow, MacIndex } from "./mac-index.js";
import type { Seen } from "./pending-offers.js";
import { Table } from "./table.js";
import { nowIso } from "./util.js";

export type MachineStatus =
  | "discovered"
  | "active"
  | "inactive"
  | "maintenance"
  | "retired"
  | "error";
export type BootAction = "sanboot" | "menu" | "local" | "kernel" | "custom" | "disabled";

export interface Machine {
  id: number;
  name: string;
  description: string;
  mac_address: string;
  ip_address: string | null;
  hostname: string | null;
  boot_mode: "bios" | "uefi";
  secure_boot_enabled: number;
  status: MachineStatus;
  status_reason: string | null;
  location: string;
  room: string;
  asset_tag: string;
  client_arch: number | null;
  client_uuid: string | null;
  vendor_class: string | null;
  boot_action: BootAction;
  boot_image_id: number | null;
  custom_script: string | null;
  overlay_policy: "persistent" | "reset";
  owner_user_id: number | null;
  bmc_address: string | null;
  bmc_username: string | null;
  bmc_password: string | null;
  created_at: string;
  updated_at: string;
  first_seen: string | null;
  last_seen: string | null;
  last_boot: string | null;
  boot_count: number;
  location_id: number | null;
  /** The target a boot menu starts on (NULL: the first active one). */
  default_target_id: number | null;
  /** NULL: as the machine's room says, else the global setting. */
  menu_timeout_seconds: number | null;
  /** Whether its menu offers the local disk; NULL: as its room says. */
  menu_local_disk: number | null;
}

export type NewMachine = Pick<Machine, "name" | "mac_address"> &
  Partial<Omit<Machine, "id" | "created_at" | "updated_at" | "boot_count">>;
export type MachinePatch = Partial<Omit<Machine, "id" | "created_at" | "updated_at">>;

const WRITABLE = [
  "name",
  "description",
  "mac_address",
  "ip_address",
  "hostname",
  "boot_mode",
  "secure_boot_enabled",
  "status",
  "status_reason",
  "location",
  "room",
  "asset_tag",
  "client_arch",
  "client_uuid",
  "vendor_class",
  "boot_action",
  "boot_image_id",
  "custom_script",
  "overlay_policy",
  "owner_user_id",
  "bmc_address",
  "bmc_username",
  "bmc_password",
  "first_seen",
  "last_seen",
  "last_boot",
  "boot_count",
  "location_id",
  "default_target_id",
  "menu_timeout_seconds",
  "menu_local_disk",
] as const satisfies readonly (keyof Machine)[];

/** A machine as listed: with whether a boot session of it is active. */
export type MachineRow = Machine & { is_online: number };

/**
 * A machine as the API shows it (the list and one machine): every column but the custom
 * script (up to 64 KiB each, never shown) and the BMC credentials, of which only whether
 * they are set is read. A page of 100 rows then reads what it shows and no more.
 */
export type MachineViewRow = Omit<MachineRow, "custom_script" | "bmc_username" | "bmc_password"> & {
  bmc_credentials_set: number;
};

/** Fields a machine list can be sorted on (columns of `machines`). */
export const MACHINE_SORTS = [
  "id",
  "name",
  "mac_address",
  "ip_address",
  "status",
  "location",
  "room",
  "created_at",
  "last_seen",
  "last_boot",
  "boot_count",
] as const;

export interface MachineFilter {
  status?: MachineStatus | undefined;
  location?: string | undefined;
  room?: string | undefined;
  owner_user_id?: number | undefined;
  /** A room's machines; null: the machines in no room. */
  location_id?: number | null | undefined;
  /** Only the machines this user owns (what a client may see). */
  visibleTo?: number | undefined;
}

const IS_ONLINE = `EXISTS (SELECT 1 FROM boot_sessions s WHERE s.machine_id = m.id AND s.status = 'active') AS is_online`;
const ROW_SELECT = `m.*, ${IS_ONLINE}`;
const HIDDEN: readonly string[] = ["custom_script", "bmc_username", "bmc_password"];
const VIEW_SELECT = [
  "m.id",
  ...WRITABLE.filter((c) => !HIDDEN.includes(c)).map((c) => `m.${c}`),
  "m.created_at",
  "m.updated_at",
  "(m.bmc_username IS NOT NULL OR m.bmc_password IS NOT NULL) AS bmc_credentials_set",
  IS_ONLINE,
].join(", ");

/** What the proxy-DHCP learned about a client it has not seen before. */
export interface Discovery {
  mac_address: string;
  client_arch: number | null;
  client_uuid: string | null;
  vendor_class: string | null;
}

/**
 * A MAC the store does not know, written down as discovered (named after its MAC, so an
 * admin can rename it); nothing when the MAC is known (recordSeen then updates that one).
 */
const INSERT_DISCOVERED = `INSERT INTO machines (name, mac_address, status, client_arch, client_uuid,
    vendor_class, first_seen, last_seen, created_at, updated_at)
  VALUES (@name, @mac_address, 'discovered', @client_arch, @client_uuid, @vendor_class, @now,
    @now, @now, @now)
  ON CONFLICT (mac_address) DO NOTHING RETURNING *`;

/** What the proxy-DHCP reads of a machine (MachinesRepo.bootViewByMac). */
export type MachineBootView = Pick<Machine, "id" | "status" | "boot_action" | "last_seen">;

/** Where a known machine's sighting waits to be written (store/pending-offers.ts). */
export interface SeenQueue {
  addSeen(seen: Seen): void;
  seenAt(machineId: number): string | undefined;
}

export class MachinesRepo extends Table<Machine> {
  /** bootViewByMac's answers from memory (store/mac-index.ts); undefined: from SQLite. */
  readonly #index: MacIndex | undefined;

  /**
   * pendingWrites: the offers and sightings not yet written (offers count boots:
   * boot_count, last_boot, updated_at, and end sessions: is_online; sightings set
   * last_seen), written before any read of a row. seenQueue: where touchSeen queues a
   * sighting (without one, touchSeen writes it at once). dataVersion: SQLite's
   * data_version, read at most once per turn (Store), which lets bootViewByMac answer
   * from memory; without it, each look-up is a query.
   */
  constructor(
    db: Db,
    clock: () => number = Date.now,
    pendingWrites?: () => void,
    private readonly seenQueue?: SeenQueue,
    dataVersion?: () => number,
  ) {
    super(db, "machines", WRITABLE, clock);
    this.pendingWrites = pendingWrites;
    if (dataVersion) {
      this.#index = new MacIndex(
        () =>
          this.prepared(
            "SELECT id, mac_address, status, boot_action, last_seen FROM machines",
          ).all() as BootViewRow[],
        dataVersion,
      );
    }
  }

  /** Every statement of this repository that writes leaves the MAC index to be reloaded. */
  protected override stmt(sql: string): Database.Statement {
    const s = super.stmt(sql);
    if (!s.readonly) this.#index?.invalidate();
    return s;
  }

  /** A failed transaction may have told the index of writes it then rolled back. */
  protected override transaction<T>(fn: () => T): T {
    try {
      return super.transaction(fn);
    } catch (err) {
      this.#index?.invalidate();
      throw err;
    }
  }

  /**
   * The queue's write failed and rolled back (store/index.ts): the index may hold a
   * last_seen that was not written.
   */
  seenWriteFailed(): void {
    this.#index?.invalidate();
  }

  create(m: NewMachine): Machine {
    return this.insert(m);
  }

  countByStatus(status: MachineStatus): number {
    // Without writing the queue first: the discovery asks it before each new machine, and
    // neither an offer nor a sighting changes a status (a write of the queue per discovery
    // was a transaction each in a storm of new PCs).
    return (
      this.prepared("SELECT count(*) AS n FROM machines WHERE status = ?").get(status) as {
        n: number;
      }
    ).n;
  }

  getRow(id: number): MachineRow | undefined {
    return this.stmt(`SELECT ${ROW_SELECT} FROM machines m WHERE m.id = ?`).get(id) as
      | MachineRow
      | undefined;
  }

  /** One machine as the API shows it (see MachineViewRow). */
  getViewRow(id: number): MachineViewRow | undefined {
    return this.stmt(`SELECT ${VIEW_SELECT} FROM machines m WHERE m.id = ?`).get(id) as
      | MachineViewRow
      | undefined;
  }

  listRows(q: ListQuery, f: MachineFilter = {}): ListPage<MachineViewRow> {
    return this.page<MachineViewRow>(
      {
        select: VIEW_SELECT,
        from: "machines m",
        where: [
          f.status && "m.status = @status",
          f.location !== undefined && "m.location = @location",
          f.room !== undefined && "m.room = @room",
          f.owner_user_id !== undefined && "m.owner_user_id = @owner",
          f.location_id === null && "m.location_id IS NULL",
          typeof f.location_id === "number" && "m.location_id = @location_id",
          f.visibleTo !== undefined && "m.owner_user_id = @me",
        ],
        params: {
          status: f.status,
          location: f.location,
          room: f.room,
          owner: f.owner_user_id,
          location_id: f.location_id,
          me: f.visibleTo,
        },
        search: [
          "m.name",
          "m.description",
          "m.mac_address",
          "m.ip_address",
          "m.hostname",
          "m.asset_tag",
          "m.location",
          "m.room",
        ],
        sort: sortColumns("m", MACHINE_SORTS),
        tiebreak: "m.id",
      },
      q,
    );
  }

  /** The user a machine is assigned to: null when none, undefined when no such machine. */
  ownerOf(id: number): number | null | undefined {
    const row = this.stmt("SELECT owner_user_id AS o FROM machines WHERE id = ?").get(id) as
      | { o: number | null }
      | undefined;
    return row?.o;
  }

  /**
   * The few fields the proxy-DHCP decides on, by MAC: it asks for every request, and
   * reading the whole row (30-odd columns into an object) cost more than the query.
   */
  bootViewByMac(mac: string): MachineBootView | undefined {
    // Without writing the queue first: the DHCP path does not write the offers of the
    // requests before it (that would be a transaction per request again), and no offer
    // changes these columns. A sighting changes last_seen: the queued one is read instead.
    let view: MachineBootView | undefined;
    if (this.#index && !this.db.inTransaction) {
      const row = this.#index.get(mac);
      // A copy: the caller may change it, the index's row must not.
      view = row && {
        id: row.id,
        status: row.status as MachineStatus,
        boot_action: row.boot_action as BootAction,
        last_seen: row.last_seen,
      };
    } else {
      // Inside a transaction the rows may yet be rolled back: the index is not loaded from them.
      view = this.prepared(
        "SELECT id, status, boot_action, last_seen FROM machines WHERE mac_address = ?",
      ).get(mac) as MachineBootView | undefined;
    }
    const queued = view && this.seenQueue?.seenAt(view.id);
    if (view && queued) view.last_seen = queued;
    return view;
  }

  /**
   * A known machine was heard from: last_seen (and the client's latest arch, UUID, vendor
   * class), as recordSeen writes them, queued to be written behind the reply with the
   * offers (store/pending-offers.ts). Returns the last_seen it will have.
   */
  touchSeen(id: number, d: Omit<Discovery, "mac_address">): string {
    const seen: Seen = {
      machine_id: id,
      at: nowIso(this.clock),
      client_arch: d.client_arch,
      client_uuid: d.client_uuid,
      vendor_class: d.vendor_class,
    };
    if (this.seenQueue) this.seenQueue.addSeen(seen);
    else this.writeSeen([seen]);
    return seen.at;
  }

  /** Sightings, as touchSeen queued them (the caller's transaction holds them together). */
  writeSeen(seen: readonly Seen[]): void {
    // Columns no pending offer writes, and a write the queue itself makes: no flush first.
    const update = this.prepared(
      `UPDATE machines SET last_seen = @at, first_seen = coalesce(first_seen, @at),
         client_arch = coalesce(@client_arch, client_arch),
         client_uuid = coalesce(@client_uuid, client_uuid),
         vendor_class = coalesce(@vendor_class, vendor_class) WHERE id = @machine_id`,
    );
    for (const s of seen) {
      update.run(s);
      this.#index?.seenWritten(s.machine_id, s.at);
    }
  }

  getByMac(mac: string): Machine | undefined {
    return this.stmt("SELECT * FROM machines WHERE mac_address = ?").get(mac) as
      | Machine
      | undefined;
  }

  /**
   * Records a PXE request from a MAC: an unknown one becomes a `discovered` machine
   * (named after its MAC, so an admin can rename it), a known one gets `last_seen`.
   * The look-up and the write share one transaction.
   */
  recordSeen(d: Discovery): { machine: Machine; created: boolean } {
    // A new MAC, what the discovery asks for: one statement, its own transaction, without
    // writing the queue first (no offer or sighting can be queued for a machine that does
    // not exist yet) and without reloading the MAC index (told of the row instead). It was
    // the queue's write, a look-up, the insert and a read back, in two transactions.
    const created = this.prepared(INSERT_DISCOVERED).get({
      name: `pc-${d.mac_address.replace(/:/g, "")}`,
      mac_address: d.mac_address,
      client_arch: d.client_arch,
      client_uuid: d.client_uuid,
      vendor_class: d.vendor_class,
      now: nowIso(this.clock),
    }) as Machine | undefined;
    if (created) {
      // Inside another's transaction, which may yet roll back, the index is reloaded instead.
      if (this.db.inTransaction) this.#index?.invalidate();
      else this.#index?.added(created);
      return { machine: created, created: true };
    }
    return this.#recordSeen(d);
  }

  #recordSeen(d: Discovery): { machine: Machine; created: boolean } {
    return this.transaction(() => {
      const now = nowIso(this.clock);
      const existing = this.getByMac(d.mac_address);
      if (existing) {
        // Written here, not queued: the row read back right after is what it returns.
        this.writeSeen([
          {
            machine_id: existing.id,
            at: now,
            client_arch: d.client_arch,
            client_uuid: d.client_uuid,
            vendor_class: d.vendor_class,
          },
        ]);
        return { machine: this.get(existing.id)!, created: false };
      }
      const machine = this.create({
        name: `pc-${d.mac_address.replace(/:/g, "")}`,
        mac_address: d.mac_address,
        status: "discovered",
        client_arch: d.client_arch,
        client_uuid: d.client_uuid,
        vendor_class: d.vendor_class,
        first_seen: now,
        last_seen: now,
      });
      return { machine, created: true };
    });
  }
}
