/** The fields the proxy-DHCP decides on, by MAC (what `MachinesRepo.bootViewByMac` returns). */
export interface BootViewRow {
  id: number;
  mac_address: string;
  status: string;
  boot_action: string;
  last_seen: string | null;
}

/**
 * Every machine's boot view by MAC, in memory: the proxy-DHCP looks a MAC up on every
 * request, and SQLite's look-up (~3-5 µs a MAC, a hit or a miss) was most of what a
 * request cost besides the send. Not a cache with a lifetime: it is true or it is reloaded.
 *
 * - This process's writes: `MachinesRepo` marks it stale before any statement of its own
 *   that writes (an insert, an update, a delete), and after a transaction of its that
 *   failed; the next look-up reloads the table. Two writes keep it instead, since they
 *   tell it what they wrote: a machine the discovery created (`added`) and the last_seen
 *   the proxy-DHCP's queue wrote (`seenWritten`). No other SQL of src/ writes these
 *   columns (test/store/mac-index.test.ts checks it). A raw write through `store.db` in this
 *   process would go unseen: none is made outside the store's repositories.
 * - Another process's commit (the `bootfleet` command, an admin's sqlite3): SQLite's
 *   data_version, which `dataVersion` reads once per turn of the event loop (as
 *   `Store.generation()` does); a changed one reloads the table. So another process's
 *   change counts from the next turn on, the same rule as for the API's cached answers.
 */
export class MacIndex {
  #byMac: Map<string, BootViewRow> | undefined;
  #byId = new Map<number, BootViewRow>();
  #version: number | undefined;

  constructor(
    private readonly loadAll: () => BootViewRow[],
    private readonly dataVersion: () => number,
  ) {}

  /** The machine with this MAC as the store holds it (undefined: none). Do not change it. */
  get(mac: string): BootViewRow | undefined {
    // data_version first: a load after it holds at least what that version says.
    const version = this.dataVersion();
    let byMac = this.#byMac;
    if (!byMac || version !== this.#version) {
      byMac = this.#load();
      this.#version = version;
    }
    return byMac.get(mac);
  }

  /** Whether it holds the store as it is (for a writer that will tell it what it wrote). */
  get loaded(): boolean {
    return this.#byMac !== undefined;
  }

  /** Something wrote machines in a way it does not follow: reloaded at the next look-up. */
  invalidate(): void {
    this.#byMac = undefined;
    this.#byId.clear();
  }

  /** A machine this process just inserted, after its transaction committed. */
  added(row: BootViewRow): void {
    const byMac = this.#byMac;
    if (!byMac) return;
    const copy: BootViewRow = {
      id: row.id,
      mac_address: row.mac_address,
      status: row.status,
      boot_action: row.boot_action,
      last_seen: row.last_seen,
    };
    byMac.set(copy.mac_address, copy);
    this.#byId.set(copy.id, copy);
  }

  /** The last_seen this process wrote for a machine. */
  seenWritten(id: number, at: string): void {
    const row = this.#byId.get(id);
    if (row) row.last_seen = at;
  }

  #load(): Map<string, BootViewRow> {
    const byMac = new Map<string, BootViewRow>();
    this.#byId.clear();
    for (const row of this.loadAll()) {
      byMac.set(row.mac_address, row);
      this.#byId.set(row.id, row);
    }
    this.#byMac = byMac;
    return byMac;
  }
}
