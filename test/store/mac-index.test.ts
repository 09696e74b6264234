import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import pino from "pino";
import t from "tap";
import { Discovery } from "../../src/netboot/discovery.js";
import { Store } from "../../src/store/index.js";
import { type BootViewRow, MacIndex } from "../../src/store/mac-index.js";
import { tempDir } from "../helpers/daemon.js";

// The proxy-DHCP's look-up by MAC is answered from memory (store/mac-index.ts): these check
// that it is never behind the store. A machine deleted, or its boot settings changed, is
// seen by the very next DISCOVER.

type Teardown = { teardown(fn: () => void): void };

function openStore(t: Teardown, path = join(tempDir(t), "bf.db")): Store {
  const store = Store.open({ path, busyTimeoutMs: 1000 });
  t.teardown(() => store.close());
  return store;
}

const MAC = "02:00:00:00:00:01";
const pxe = { client_arch: 0, client_uuid: null, vendor_class: "PXEClient" };
const nextTurn = () => new Promise((r) => setImmediate(r));

function known(store: Store, mac = MAC): number {
  return store.machines.recordSeen({ mac_address: mac, ...pxe }).machine.id;
}

/** A DISCOVER as the proxy-DHCP's policy sees it: the machine it decides on. */
function discover(discovery: Discovery, mac = MAC) {
  return discovery.seen({ mac, arch: 0, archKind: "bios", isIpxe: false } as never);
}

t.test("a machine deleted is unknown to the very next DISCOVER", async (t) => {
  const store = openStore(t);
  const discovery = new Discovery({ store, log: pino({ level: "silent" }) });
  const id = known(store);
  t.equal(discover(discovery)?.id, id, "known, and the index loaded");
  t.ok(store.machines.delete(id));
  t.equal(store.machines.bootViewByMac(MAC), undefined, "the look-up no longer finds it");
  const again = discover(discovery);
  t.not(again?.id, id, "the next DISCOVER does not get the deleted machine");
  t.equal(again?.status, "discovered", "it is discovered anew, as any unknown MAC");
});

t.test("boot settings changed are read by the very next DISCOVER", async (t) => {
  const store = openStore(t);
  const discovery = new Discovery({ store, log: pino({ level: "silent" }) });
  const id = known(store);
  t.match(discover(discovery), { id, status: "discovered" });
  store.machines.update(id, { status: "maintenance" });
  t.match(discover(discovery), { id, status: "maintenance" });
  store.machines.update(id, { status: "active", boot_action: "local" });
  t.match(discover(discovery), { id, status: "active", boot_action: "local" });
  // A change of its MAC: the old one is unknown, the new one is this machine.
  store.machines.update(id, { mac_address: "02:00:00:00:00:02" });
  t.equal(store.machines.bootViewByMac(MAC), undefined);
  t.equal(store.machines.bootViewByMac("02:00:00:00:00:02")?.id, id);
});

t.test("a change rolled back is not kept, and a look-up inside it is not kept", async (t) => {
  const store = openStore(t);
  const id = known(store);
  t.equal(store.machines.bootViewByMac(MAC)?.status, "discovered");
  t.throws(() =>
    store.transaction(() => {
      store.machines.update(id, { status: "retired", boot_action: "disabled" });
      // Read inside the transaction: what it holds, not yet committed.
      t.equal(store.machines.bootViewByMac(MAC)?.status, "retired");
      throw new Error("roll back");
    }),
  );
  t.match(store.machines.bootViewByMac(MAC), { status: "discovered", boot_action: "sanboot" });
  // A machine created inside a transaction that rolls back is not found after.
  t.throws(() =>
    store.transaction(() => {
      known(store, "02:00:00:00:00:03");
      throw new Error("roll back");
    }),
  );
  t.equal(store.machines.bootViewByMac("02:00:00:00:00:03"), undefined);
});

t.test("another process's change counts from the next turn of the event loop", async (t) => {
  const path = join(tempDir(t), "bf.db");
  const store = openStore(t, path);
  const other = openStore(t, path);
  const id = known(store);
  const kept = known(store, "02:00:00:00:00:02");
  t.equal(store.machines.bootViewByMac(MAC)?.id, id);
  await nextTurn();
  other.machines.update(kept, { boot_action: "local" });
  other.machines.delete(id);
  await nextTurn();
  t.equal(store.machines.bootViewByMac(MAC), undefined, "deleted by the other process");
  t.equal(store.machines.bootViewByMac("02:00:00:00:00:02")?.boot_action, "local");
  // A machine the other process adds.
  await nextTurn();
  other.machines.recordSeen({ mac_address: "02:00:00:00:00:04", ...pxe });
  await nextTurn();
  t.equal(store.machines.bootViewByMac("02:00:00:00:00:04")?.status, "discovered");
});

t.test("a discovered machine and a written last_seen are read without a reload", async (t) => {
  const store = openStore(t);
  const discovery = new Discovery({ store, log: pino({ level: "silent" }) });
  t.equal(store.machines.bootViewByMac(MAC), undefined, "unknown, and the index loaded");
  const created = discover(discovery);
  t.equal(store.machines.bootViewByMac(MAC)?.id, created?.id, "the machine just discovered");
  // Last seen long ago (a morning's boot storm), then heard from: queued, then written.
  store.transaction(() =>
    store.machines.update(created!.id, { last_seen: "2026-01-01T00:00:00.000Z" }),
  );
  t.equal(store.machines.bootViewByMac(MAC)?.last_seen, "2026-01-01T00:00:00.000Z");
  const at = discover(discovery)?.last_seen;
  t.not(at, "2026-01-01T00:00:00.000Z");
  store.generation(); // writes the queue
  t.equal(store.pendingOffers.size, 0, "written");
  t.equal(store.machines.bootViewByMac(MAC)?.last_seen, at, "the look-up reads what was written");
  const sizeBefore = store.pendingOffers.size;
  discover(discovery);
  t.equal(store.pendingOffers.size, sizeBefore, "so the next request queues no sighting again");
});

t.test("the caller's copy: changing it does not change what the next look-up reads", async (t) => {
  const store = openStore(t);
  known(store);
  const view = store.machines.bootViewByMac(MAC)!;
  view.status = "retired";
  t.equal(store.machines.bootViewByMac(MAC)?.status, "discovered");
});

t.test("MacIndex: loads once, reloads when data_version moves or it is invalidated", async (t) => {
  const rows: BootViewRow[] = [
    { id: 1, mac_address: "a", status: "active", boot_action: "sanboot", last_seen: null },
  ];
  let loads = 0;
  let version = 1;
  const index = new MacIndex(
    () => {
      loads++;
      return rows.map((r) => ({ ...r }));
    },
    () => version,
  );
  t.equal(index.get("a")?.id, 1);
  t.equal(index.get("b"), undefined);
  t.equal(loads, 1, "a hit and a miss: one load");
  index.added({
    id: 2,
    mac_address: "b",
    status: "discovered",
    boot_action: "sanboot",
    last_seen: "x",
  });
  index.seenWritten(1, "y");
  t.equal(index.get("b")?.id, 2);
  t.equal(index.get("a")?.last_seen, "y");
  t.equal(loads, 1, "told of its writes: no reload");
  version = 2;
  t.equal(index.get("b"), undefined, "another connection's commit: reloaded from the table");
  t.equal(loads, 2);
  index.invalidate();
  t.equal(index.loaded, false);
  index.added({ id: 3, mac_address: "c", status: "x", boot_action: "x", last_seen: null });
  t.equal(index.get("c"), undefined, "added to an index not loaded: the table decides");
  t.equal(loads, 3);
});

// The index follows the writes MachinesRepo makes. These check that no other SQL of the
// store writes the columns it holds, now or after a later change.
t.test("no SQL outside MachinesRepo writes the columns the index holds", async (t) => {
  // All of src/: a room holding `store.db` could write SQL past the repositories too.
  const dir = join(import.meta.dirname, "../../src");
  const writes =
    /(UPDATE|INSERT\s+(OR\s+\w+\s+)?INTO|REPLACE\s+INTO|DELETE\s+FROM)\s+machines\b[^`"]*/gi;
  const files = readdirSync(dir, { recursive: true, encoding: "utf8" });
  for (const file of files) {
    if (!/\.tsx?$/.test(file) || file === "store/machines.ts" || file === "store/migrations.ts") {
      continue;
    }
    for (const m of readFileSync(join(dir, file), "utf8").matchAll(writes)) {
      t.match(
        m[0].replace(/\s+/g, " "),
        /^UPDATE machines SET boot_count = boot_count \+ 1, last_boot = @at, updated_at = @at WHERE id = @id$/,
        `${file}: only the offers' boot count writes machines`,
      );
    }
  }
  const store = openStore(t);
  const triggers = store.db
    .prepare("SELECT sql FROM sqlite_master WHERE type = 'trigger'")
    .pluck()
    .all() as string[];
  t.notOk(
    triggers.some((sql) => /\bmachines\b/i.test(sql.split(/\bBEGIN\b/i)[1] ?? "")),
    "no trigger writes machines",
  );
  const refs = store.db.prepare("PRAGMA foreign_key_list(machines)").all() as {
    from: string;
    on_update: string;
    on_delete: string;
  }[];
  const held = ["id", "mac_address", "status", "boot_action", "last_seen"];
  for (const r of refs) {
    t.not(r.on_delete, "CASCADE", `${r.from}: a referenced row's delete does not delete machines`);
    t.notOk(
      held.includes(r.from) && r.on_delete !== "NO ACTION" && r.on_delete !== "RESTRICT",
      `${r.from}: not a column the index holds`,
    );
    t.notOk(
      held.includes(r.from) && r.on_update !== "NO ACTION" && r.on_update !== "RESTRICT",
      `${r.from}: not changed by a cascade`,
    );
  }
});

t.test("a discovery writes neither the queue nor reloads the index", async (t) => {
  const store = openStore(t);
  const discovery = new Discovery({ store, log: pino({ level: "silent" }) });
  const first = discover(discovery, "02:00:00:00:00:0a");
  store.pendingOffers.add({
    machine_id: first!.id,
    server_ip: "10.0.0.1",
    boot_method: "bios",
    at: new Date().toISOString(),
  });
  const second = discover(discovery, "02:00:00:00:00:0b");
  t.match(second, { status: "discovered" });
  t.not(second?.id, first?.id);
  t.equal(store.pendingOffers.size, 1, "the first machine's offer still waits, for the batch");
  t.equal(store.machines.bootViewByMac("02:00:00:00:00:0b")?.id, second?.id);
  // What the API reads has both: the offer (written by its read) and the new machine.
  t.match(store.machines.get(first!.id), { boot_count: 1 });
  t.match(store.machines.getByMac("02:00:00:00:00:0b"), {
    status: "discovered",
    name: "pc-02000000000b",
    first_seen: second?.last_seen,
    client_arch: 0,
    vendor_class: null,
  });
});
