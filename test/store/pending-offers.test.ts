import { join } from "node:path";
import pino from "pino";
import t from "tap";
import { Discovery } from "../../src/netboot/discovery.js";
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

// A known machine's sighting (last_seen, the client's arch, UUID, vendor class) is queued
// with the offers (MachinesRepo.touchSeen): every guarantee above holds for it too.

const LONG_AGO = "2026-01-01T00:00:00.000Z";

/** last_seen as the file holds it, read past the repositories. */
function lastSeenOnFile(store: Store, id: number): string | null {
  return store.db.prepare("SELECT last_seen FROM machines WHERE id = ?").pluck().get(id) as
    | string
    | null;
}

/** Machines last seen long ago, as every PC of a morning's boot storm is. */
function seenLongAgo(store: Store, n: number): number[] {
  const ids = machines(store, n);
  store.db.prepare("UPDATE machines SET last_seen = ?").run(LONG_AGO);
  return ids;
}

/** The batches writeSeen was called with, and the offers' batches, in call order. */
function countAllWrites(store: Store): string[] {
  const calls: string[] = [];
  const seen = store.machines.writeSeen.bind(store.machines);
  store.machines.writeSeen = (s) => {
    calls.push(`seen ${s.length}`);
    seen(s);
  };
  const offers = store.sessions.recordOffers.bind(store.sessions);
  store.sessions.recordOffers = (o) => {
    calls.push(`offers ${o.length}`);
    offers(o);
  };
  return calls;
}

const pxe = { client_arch: 7, client_uuid: "uuid-1", vendor_class: "PXEClient:Arch:00007" };

t.test(
  "a sighting: not written on its turn, written with the offers, read right after",
  async (t) => {
    const store = openStore(t);
    const ids = seenLongAgo(store, 3);
    const calls = countAllWrites(store);
    const at = ids.map((id) => store.machines.touchSeen(id, pxe));
    for (const id of ids) store.pendingOffers.add(offer(id));
    t.ok(
      ids.every((id) => lastSeenOnFile(store, id) === LONG_AGO),
      "the reply's turn wrote no last_seen",
    );
    t.equal(store.pendingOffers.size, 6, "three offers, three sightings");
    // The API reads the machine: it sees the sighting.
    const row = store.machines.get(ids[0]!);
    t.equal(row?.last_seen, at[0], "a reader sees the last_seen touchSeen returned");
    t.match(row, { client_arch: 7, client_uuid: "uuid-1", vendor_class: "PXEClient:Arch:00007" });
    t.same(calls, ["seen 3", "offers 3"], "one write of both");
    t.ok(ids.every((id, k) => lastSeenOnFile(store, id) === at[k]));
    t.equal(store.pendingOffers.size, 0);
  },
);

t.test("without a reader, the timer writes a sighting alone", async (t) => {
  const store = openStore(t);
  const [id] = seenLongAgo(store, 1) as [number];
  const at = store.machines.touchSeen(id, pxe);
  t.equal(lastSeenOnFile(store, id), LONG_AGO);
  await new Promise((r) => setTimeout(r, 100));
  t.equal(lastSeenOnFile(store, id), at, "written by the timer");
  t.equal(store.pendingOffers.size, 0);
});

t.test(
  "the DHCP look-up reads the queued last_seen: a second request queues nothing new",
  async (t) => {
    const store = openStore(t);
    const [id] = seenLongAgo(store, 1) as [number];
    const mac = store.db.prepare("SELECT mac_address FROM machines WHERE id = ?").pluck().get(id);
    const at = store.machines.touchSeen(id, pxe);
    const view = store.machines.bootViewByMac(mac as string);
    t.equal(view?.last_seen, at, "not the file's long-ago one");
    t.equal(lastSeenOnFile(store, id), LONG_AGO, "and the look-up wrote nothing");
    // A second sighting before the write replaces the first; a null field keeps the older.
    const later = store.machines.touchSeen(id, {
      client_arch: null,
      client_uuid: "uuid-2",
      vendor_class: null,
    });
    t.equal(store.pendingOffers.size, 1, "one sighting per machine");
    t.match(store.machines.get(id), { last_seen: later, client_arch: 7, client_uuid: "uuid-2" });
  },
);

t.test("a sighting: in the generation, before a transaction, kept by a clean stop", async (t) => {
  const path = join(tempDir(t), "bf.db");
  const store = Store.open({ path, busyTimeoutMs: 100 });
  const [a, b] = seenLongAgo(store, 2) as [number, number];
  const before = store.generation();
  store.machines.touchSeen(a, pxe);
  t.not(store.generation(), before, "a cached API answer (the machine list) is built again");
  store.machines.touchSeen(a, pxe);
  let inside: string | null = null;
  t.throws(() =>
    store.transaction(() => {
      inside = lastSeenOnFile(store, a);
      throw new Error("rolled back");
    }),
  );
  t.not(inside, LONG_AGO, "written before the transaction began");
  t.not(lastSeenOnFile(store, a), LONG_AGO, "still there after the rollback");
  // Recording a known machine the long way (its own transaction) writes the queue first,
  // then its own, newer sighting.
  const queued = store.machines.touchSeen(b, pxe);
  const { machine } = store.machines.recordSeen({ mac_address: "02:00:00:00:00:02", ...pxe });
  t.equal(machine.id, b);
  t.ok(machine.last_seen! >= queued);
  const stopped = store.machines.touchSeen(b, { ...pxe, client_uuid: "at-stop" });
  store.close();
  const again = openStore(t, path);
  t.equal(lastSeenOnFile(again, b), stopped, "the stop wrote the last sighting");
  t.equal(again.machines.get(b)?.client_uuid, "at-stop");
});

t.test("a failed write keeps the sightings, the newer fields winning", async (t) => {
  const store = openStore(t);
  const [id] = seenLongAgo(store, 1) as [number];
  const write = store.machines.writeSeen.bind(store.machines);
  let failNext = true;
  store.machines.writeSeen = (s) => {
    if (failNext) {
      failNext = false;
      throw new Error("database is locked");
    }
    write(s);
  };
  store.machines.touchSeen(id, pxe);
  t.equal(store.pendingOffers.flush(), false, "the write failed");
  t.equal(lastSeenOnFile(store, id), LONG_AGO);
  const later = store.machines.touchSeen(id, { ...pxe, client_uuid: null, client_arch: 9 });
  t.match(store.machines.get(id), { last_seen: later, client_arch: 9, client_uuid: "uuid-1" });
  t.equal(store.pendingOffers.size, 0);
});

t.test(
  "discovery of a machine last seen long ago: the view it returns, nothing written",
  async (t) => {
    const store = openStore(t);
    const [id] = seenLongAgo(store, 1) as [number];
    const discovery = new Discovery({ store, log: pino({ level: "silent" }) });
    const client = { mac: "02:00:00:00:00:01", arch: 7, uuid: "uuid-1", vendorClass: "PXEClient" };
    const first = discovery.seen(client as Parameters<Discovery["seen"]>[0]);
    t.equal(first?.id, id);
    t.not(first?.last_seen, LONG_AGO, "the view says seen now");
    t.equal(lastSeenOnFile(store, id), LONG_AGO, "the request's turn wrote nothing");
    // The firmware's next request, before the write: within the resolution, nothing queued.
    const second = discovery.seen(client as Parameters<Discovery["seen"]>[0]);
    t.equal(second?.last_seen, first?.last_seen);
    t.equal(store.pendingOffers.size, 1);
    t.equal(store.machines.get(id)?.last_seen, first?.last_seen, "a reader sees it");
  },
);
