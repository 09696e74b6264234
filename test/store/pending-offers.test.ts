import { join } from "node:path";
import t from "tap";
import { Store } from "../../src/store/index.js";
import type { Offer, OfferSink } from "../../src/store/pending-offers.js";
import { tempDir } from "../helpers/daemon.js";

type Teardown = { teardown(fn: () => void): void };

// The proxy-DHCP's offers are written behind its replies (store/pending-offers.ts): these
// check that none is lost and none is missed by a reader, on a real SQLite file.

function openStore(t: Teardown, path = join(tempDir(t), "bf.db")): Store {
  const store = Store.open({ path, busyTimeoutMs: 100 });
  t.teardown(() => store.close());
  return store;
}

function machines(store: Store, n: number): number[] {
  return Array.from(
    { length: n },
    (_, i) =>
      store.machines.recordSeen({
        mac_address: `02:00:00:00:00:${(i + 1).toString(16).padStart(2, "0")}`,
        client_arch: 0,
        client_uuid: null,
        vendor_class: "PXEClient",
      }).machine.id,
  );
}

function offer(machine_id: number): Offer {
  return { machine_id, server_ip: "10.0.0.1", boot_method: "bios", at: new Date().toISOString() };
}

/** Sessions as the file holds them, read past the repositories (which write pending offers first). */
function sessionsOnFile(store: Store): number {
  return store.db.prepare("SELECT count(*) FROM boot_sessions").pluck().get() as number;
}

/** The batches recordOffers was called with. */
function countWrites(store: Store): number[] {
  const batches: number[] = [];
  const write = store.sessions.recordOffers.bind(store.sessions);
  store.sessions.recordOffers = (offers) => {
    batches.push(offers.length);
    write(offers);
  };
  return batches;
}

function sink(): OfferSink & { writtenIds: Promise<readonly number[]>; failures: unknown[] } {
  let resolve!: (ids: readonly number[]) => void;
  const writtenIds = new Promise<readonly number[]>((r) => {
    resolve = r;
  });
  const failures: unknown[] = [];
  return {
    writtenIds,
    failures,
    written: (ids) => resolve(ids),
    failed: (err, counts) => failures.push({ err, ...counts }),
  };
}

t.test(
  "offers of one turn: not written on it, one transaction, each read right after",
  async (t) => {
    const store = openStore(t);
    const ids = machines(store, 5);
    const batches = countWrites(store);
    for (const id of ids) store.pendingOffers.add(offer(id));
    t.equal(sessionsOnFile(store), 0, "the reply's turn wrote nothing");
    t.equal(store.pendingOffers.size, 5);
    // A reader of sessions (the API, the script route, the fleet) sees every one.
    const sessions = ids.map((id) => store.sessions.current(id));
    t.ok(
      sessions.every((s) => s?.status === "starting" && s.dhcp_offer_at !== null),
      "a starting session each",
    );
    t.same(batches, [5], "all five in one write");
    t.equal(sessionsOnFile(store), 5);
    t.equal(store.pendingOffers.size, 0);
  },
);

t.test("without a reader, the timer writes them and the sink hears of it", async (t) => {
  const store = openStore(t);
  const ids = machines(store, 3);
  const batches = countWrites(store);
  const told = sink();
  for (const id of ids) store.pendingOffers.add(offer(id), told);
  t.same([...(await told.writtenIds)].sort(), [...ids].sort(), "told once, with its machines");
  t.same(batches, [3]);
  t.equal(sessionsOnFile(store), 3);
});

t.test("a machine's boot counter and the store's generation include them", async (t) => {
  const store = openStore(t);
  const [id] = machines(store, 1) as [number];
  const before = store.generation();
  store.pendingOffers.add(offer(id));
  t.not(store.generation(), before, "a cached API answer is built again");
  store.pendingOffers.add(offer(id)); // the same boot: stamped, not counted again
  t.equal(store.machines.get(id)?.boot_count, 1);
  t.equal(store.machines.getViewRow(id)?.boot_count, 1);
});

t.test("a transaction sees them, and its rollback does not take them", async (t) => {
  const store = openStore(t);
  const [id] = machines(store, 1) as [number];
  store.pendingOffers.add(offer(id));
  let inside = -1;
  t.throws(() =>
    store.transaction(() => {
      inside = sessionsOnFile(store);
      throw new Error("rolled back");
    }),
  );
  t.equal(inside, 1, "written before the transaction began");
  t.equal(sessionsOnFile(store), 1, "still there after the rollback");
});

t.test("a boot phase stamped later lands on the offer's session", async (t) => {
  const store = openStore(t);
  const [id] = machines(store, 1) as [number];
  store.pendingOffers.add(offer(id));
  const stamped = store.sessions.stampPhase(id, "tftp_done_at");
  t.ok(stamped.dhcp_offer_at, "the session the offer opened, not a new one");
  t.equal(sessionsOnFile(store), 1);
});

t.test("a clean stop writes what waits", async (t) => {
  const path = join(tempDir(t), "bf.db");
  const store = Store.open({ path, busyTimeoutMs: 100 });
  const ids = machines(store, 4);
  // The fleet, told after the write, reads the store: not once it is closed.
  let told = 0;
  const fleet: OfferSink = {
    written: (machineIds) => {
      told++;
      for (const id of machineIds) store.sessions.latest(id);
    },
    failed: () => {},
  };
  for (const id of ids) store.pendingOffers.add(offer(id), fleet);
  store.close();
  await new Promise((r) => setImmediate(r));
  t.equal(told, 0, "no one is told after the store closed");
  const again = openStore(t, path);
  t.equal(sessionsOnFile(again), 4);
  t.equal(again.pendingOffers.size, 0);
});

t.test("a failed write is kept, told, and written by the next flush", async (t) => {
  const store = openStore(t);
  const ids = machines(store, 2);
  const write = store.sessions.recordOffers.bind(store.sessions);
  let failNext = true;
  store.sessions.recordOffers = (offers) => {
    if (failNext) {
      failNext = false;
      throw new Error("database is locked");
    }
    write(offers);
  };
  const told = sink();
  for (const id of ids) store.pendingOffers.add(offer(id), told);
  t.equal(store.pendingOffers.flush(), false, "the write failed");
  t.equal(store.pendingOffers.size, 2, "both kept");
  // The next reader's flush tries again (and a timer would, a second later).
  t.equal(store.sessions.current(ids[0]!)?.status, "starting", "written on the next read");
  t.same([...(await told.writtenIds)].sort(), [...ids].sort());
  t.match(told.failures, [{ err: { message: "database is locked" }, kept: 2, dropped: 0 }]);
  t.equal(sessionsOnFile(store), 2);
});
