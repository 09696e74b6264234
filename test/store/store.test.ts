import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import t from "tap";
import { openStore, StoreError } from "../../src/store/db.js";
import { Store } from "../../src/store/index.js";
import { LATEST_VERSION, MIGRATIONS } from "../../src/store/migrations.js";
import { tempDir } from "../helpers/daemon.js";

function schemaOf(path: string): string[] {
  const db = new Database(path, { readonly: true });
  const rows = db
    .prepare(
      "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
    )
    .all() as { type: string; name: string; sql: string }[];
  db.close();
  return rows.map((r) => `${r.type} ${r.name}: ${r.sql.replace(/\s+/g, " ")}`);
}

function openError(fn: () => unknown): StoreError {
  try {
    fn();
  } catch (err) {
    if (err instanceof StoreError) return err;
    throw err;
  }
  throw new Error("expected a StoreError");
}

t.test("from empty: WAL, foreign keys on, every migration applied", async (t) => {
  const path = join(tempDir(t), "bf.db");
  const db = openStore({ path, busyTimeoutMs: 100 });
  t.equal(db.pragma("journal_mode", { simple: true }), "wal");
  t.equal(db.pragma("foreign_keys", { simple: true }), 1);
  t.equal(db.pragma("user_version", { simple: true }), LATEST_VERSION);
  const tables = (
    db.prepare("SELECT name FROM sqlite_master WHERE type='table'").all() as { name: string }[]
  ).map((r) => r.name);
  for (const name of [
    "users",
    "machines",
    "images",
    "image_versions",
    "targets",
    "boot_sessions",
    "jobs",
    "job_logs",
    "history_events",
  ]) {
    t.ok(tables.includes(name), `table ${name}`);
  }
  db.close();
});

t.test("from every earlier version, the schema ends the same as from empty", async (t) => {
  const dir = tempDir(t);
  const fresh = join(dir, "fresh.db");
  openStore({ path: fresh, busyTimeoutMs: 100 }).close();
  const expected = schemaOf(fresh);
  for (let k = 0; k < MIGRATIONS.length; k++) {
    const path = join(dir, `from-${k}.db`);
    openStore({ path, busyTimeoutMs: 100, migrations: MIGRATIONS.slice(0, k) }).close();
    const db = openStore({ path, busyTimeoutMs: 100 });
    t.equal(db.pragma("user_version", { simple: true }), LATEST_VERSION, `from version ${k}`);
    db.close();
    t.same(schemaOf(path), expected, `schema from version ${k}`);
  }
});

t.test("data written at an earlier version survives the later migrations", async (t) => {
  const path = join(tempDir(t), "bf.db");
  const first = MIGRATIONS.slice(0, 1);
  const s1 = new Store(openStore({ path, busyTimeoutMs: 100, migrations: first }));
  s1.machines.create({ name: "LAB-PC-01", mac_address: "00:11:22:33:44:55" });
  s1.close();
  const s2 = Store.open({ path, busyTimeoutMs: 100 });
  t.equal(s2.machines.getByMac("00:11:22:33:44:55")?.name, "LAB-PC-01");
  s2.close();
});

t.test("a database from a newer version is refused with a clear message", async (t) => {
  const path = join(tempDir(t), "bf.db");
  openStore({ path, busyTimeoutMs: 100 }).close();
  const db = new Database(path);
  db.pragma(`user_version = ${LATEST_VERSION + 1}`);
  db.close();
  const err = openError(() => openStore({ path, busyTimeoutMs: 100 }));
  t.match(err.message, "newer bootfleet");
  t.match(err.message, `schema version ${LATEST_VERSION + 1}`);
  t.match(err.message, path);
});

t.test("a file that is not a database is refused as corrupt", async (t) => {
  const path = join(tempDir(t), "bf.db");
  writeFileSync(path, Buffer.alloc(8192, 0x41));
  const err = openError(() => openStore({ path, busyTimeoutMs: 100 }));
  t.match(err.message, /corrupt or not a bootfleet database/);
  t.match(err.message, path);
});

t.test("a damaged database is refused as corrupt", async (t) => {
  const path = join(tempDir(t), "bf.db");
  const s = Store.open({ path, busyTimeoutMs: 100 });
  for (let i = 0; i < 300; i++) {
    s.machines.create({
      name: `pc-${i}`,
      mac_address: `02:00:00:00:${(i >> 8).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`,
    });
  }
  s.db.pragma("wal_checkpoint(TRUNCATE)");
  s.close();
  // Overwrite the middle pages (past the header) with garbage, as a failing disk would.
  execFileSync(
    "dd",
    ["if=/dev/urandom", `of=${path}`, "bs=4096", "seek=3", "count=4", "conv=notrunc"],
    {
      stdio: "ignore",
    },
  );
  const err = openError(() => openStore({ path, busyTimeoutMs: 100 }));
  t.match(err.message, /corrupt/);
});

t.test("a database locked by another process is refused, naming the lock", async (t) => {
  const path = join(tempDir(t), "bf.db");
  openStore({ path, busyTimeoutMs: 100 }).close();
  // Another process holds an exclusive write transaction.
  const holder = new Database(path);
  holder.pragma("locking_mode = EXCLUSIVE");
  holder.exec("BEGIN EXCLUSIVE");
  t.teardown(() => holder.close());
  const err = openError(() => openStore({ path, busyTimeoutMs: 100 }));
  t.match(err.message, /locked by another process/);
});

t.test("a folder that does not exist is named", async (t) => {
  const path = join(tempDir(t), "missing", "bf.db");
  const err = openError(() => openStore({ path, busyTimeoutMs: 100 }));
  t.match(err.message, /cannot open database .*missing\/bf\.db/);
});

t.test("repositories: constraints hold and discovery is one row per MAC", async (t) => {
  const s = Store.open({ path: join(tempDir(t), "bf.db"), busyTimeoutMs: 100 });
  t.teardown(() => s.close());
  const a = s.machines.recordSeen({
    mac_address: "52:54:00:00:00:01",
    client_arch: 7,
    client_uuid: null,
    vendor_class: "PXEClient:Arch:00007",
  });
  t.equal(a.created, true);
  t.equal(a.machine.status, "discovered");
  const b = s.machines.recordSeen({
    mac_address: "52:54:00:00:00:01",
    client_arch: null,
    client_uuid: null,
    vendor_class: null,
  });
  t.equal(b.created, false);
  t.equal(b.machine.id, a.machine.id);
  t.equal(b.machine.client_arch, 7, "a later request without option 93 keeps what was learned");
  t.equal(s.machines.count(), 1);

  t.throws(
    () => s.machines.create({ name: "other", mac_address: "52:54:00:00:00:01" }),
    /UNIQUE/,
    "duplicate MAC",
  );
  t.throws(
    () =>
      s.machines.create({ name: a.machine.name.toUpperCase(), mac_address: "52:54:00:00:00:02" }),
    /UNIQUE/,
    "names are unique without regard to case",
  );

  const img = s.images.create({ name: "Windows 11", filename: "win11.raw", status: "ready" });
  const v = s.images.addVersion(img.id, { path: "/x/win11.v1.raw", size_bytes: 10 });
  t.equal(v.version, 1);
  t.equal(s.images.addVersion(img.id, { path: "/x/win11.v2.raw" }).version, 2);
  t.equal(s.images.get(img.id)?.current_version, 2);

  const target = s.targets.create({
    name: "t1",
    iqn: "iqn.2026-11.lan.bootfleet:pc1",
    portal_ip: "10.99.0.1",
    machine_id: a.machine.id,
    system_image_id: img.id,
    initiator_iqn: "iqn.2026-11.lan.bootfleet:init:pc1",
    chap_username: "u",
    chap_password: "p",
  });
  t.equal(s.targets.usingImage(img.id), 1);
  t.throws(
    () => s.images.delete(img.id),
    /FOREIGN KEY/,
    "an image a target uses cannot be deleted",
  );
  t.throws(
    () =>
      s.targets.create({
        name: "t2",
        iqn: "iqn.x:y",
        portal_ip: "1.2.3.4",
        machine_id: a.machine.id,
        system_image_id: img.id,
        initiator_iqn: "i",
        chap_username: "u",
        chap_password: "p",
        target_type: "system_game",
      }),
    /CHECK/,
    "a system_game target needs its extra disk",
  );

  const session = s.sessions.stampPhase(a.machine.id, "dhcp_offer_at", { client_ip: "10.99.0.50" });
  t.ok(session.dhcp_offer_at);
  const again = s.sessions.stampPhase(a.machine.id, "script_served_at");
  t.equal(again.id, session.id, "phases of one boot land on one session");
  t.ok(again.dhcp_offer_at && again.script_served_at);

  s.machines.delete(a.machine.id);
  t.equal(s.targets.get(target.id), undefined, "deleting a machine deletes its targets");
  t.equal(s.sessions.get(session.id), undefined, "and its sessions");
});

t.test("jobs left running by a dead process are failed with the reason", async (t) => {
  const s = Store.open({ path: join(tempDir(t), "bf.db"), busyTimeoutMs: 100 });
  t.teardown(() => s.close());
  const running = s.jobs.create("convert", { image: 1 });
  s.jobs.update(running.id, { status: "running" });
  const done = s.jobs.create("cleanup");
  s.jobs.update(done.id, { status: "succeeded" });
  t.same(s.jobs.failInterrupted("interrupted by restart"), [running.id]);
  t.equal(s.jobs.get(running.id)?.status, "failed");
  t.equal(s.jobs.get(running.id)?.error, "interrupted by restart");
  t.equal(s.jobs.get(done.id)?.status, "succeeded");
  t.match(
    s.jobs.logs(running.id).map((l) => l.message),
    ["interrupted by restart"],
  );
});

t.test(
  "a list page's sessions and target errors, read at once, equal the per-machine reads",
  async (t) => {
    const s = Store.open({ path: ":memory:", busyTimeoutMs: 100 });
    t.teardown(() => s.close());
    const img = s.images.create({ name: "img", filename: "img.raw", status: "ready" });
    const ids: number[] = [];
    for (let i = 1; i <= 5; i++) {
      const m = s.machines.create({ name: `pc-${i}`, mac_address: `52:54:00:00:10:0${i}` });
      ids.push(m.id);
      // Machine 1: no session. 2: one. 3, 4, 5: several (the latest must win).
      for (let k = 1; k < i; k++)
        s.sessions.start({ machine_id: m.id, status: k < i - 1 ? "stopped" : "starting" });
      if (i >= 4) {
        // Two failed targets on machine 4 (the first by id is the one shown), a healthy one on 5.
        for (const [n, status, reason] of i === 4
          ? ([
              ["a", "error", "first failure"],
              ["b", "error", "second failure"],
            ] as const)
          : ([["c", "active", null]] as const)) {
          const tg = s.targets.create({
            name: `t-${i}-${n}`,
            iqn: `iqn.2026-11.lan.bootfleet:pc${i}${n}`,
            portal_ip: "10.99.0.1",
            machine_id: m.id,
            system_image_id: img.id,
            initiator_iqn: `iqn.x:init${i}${n}`,
            chap_username: "u",
            chap_password: "p",
          });
          s.targets.update(tg.id, { status, status_reason: reason });
        }
      }
    }
    const latest = s.sessions.latestFor(ids);
    const errors = s.targets.errorsFor(ids);
    for (const id of ids) {
      t.same(latest.get(id), s.sessions.latest(id), `machine ${id}: the same latest session`);
      const one = s.targets.forMachine(id).find((x) => x.status === "error");
      t.equal(
        errors.get(id),
        one ? (one.status_reason ?? "failed") : undefined,
        `machine ${id}: the same target error`,
      );
    }
    t.equal(errors.get(ids[3]!), "first failure");
    t.equal(latest.size, 4, "machines that never booted have no entry");
    t.same([...s.sessions.latestFor([]).keys()], [], "an empty page reads nothing");
  },
);

t.test(
  "generation: every write changes it, this connection's at once, another's next turn",
  async (t) => {
    const path = join(tempDir(t, "bf-gen-"), "bootfleet.db");
    const store = Store.open({ path, busyTimeoutMs: 2000 });
    t.teardown(() => store.close());
    const g0 = store.generation();
    t.equal(store.generation(), g0, "no write, same value");
    const m = store.machines.create({ name: "pc-1", mac_address: "52:54:00:00:05:01" });
    const g1 = store.generation();
    t.not(g1, g0, "an insert, at once");
    store.machines.update(m.id, { room: "lab" });
    const g2 = store.generation();
    t.not(g2, g1, "an update, at once");
    store.machines.delete(m.id);
    t.not(store.generation(), g2, "a delete, at once");
    await new Promise((r) => setImmediate(r));
    const g3 = store.generation();
    const other = Store.open({ path, busyTimeoutMs: 2000 });
    other.machines.create({ name: "pc-2", mac_address: "52:54:00:00:05:02" });
    other.close();
    await new Promise((r) => setImmediate(r));
    t.not(store.generation(), g3, "another connection's commit, from the next turn");
    const g4 = store.generation();
    await new Promise((r) => setImmediate(r));
    t.equal(store.generation(), g4, "and nothing more after it");
  },
);

t.test("offers of one turn: a session each, each with its own id", async (t) => {
  const store = Store.open({ path: join(tempDir(t), "bf.db"), busyTimeoutMs: 100 });
  t.teardown(() => store.close());
  const ids = ["02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"].map(
    (mac) =>
      store.machines.recordSeen({
        mac_address: mac,
        client_arch: 0,
        client_uuid: null,
        vendor_class: "PXEClient",
      }).machine.id,
  );
  const at = new Date().toISOString();
  // The session ids of a batch come from one draw of randomness, cut in pieces.
  store.sessions.recordOffers(
    ids.map((machine_id) => ({ machine_id, server_ip: "10.0.0.1", boot_method: "bios", at })),
  );
  const sessions = ids.map((id) => store.sessions.latest(id));
  const sessionIds = sessions.map((s) => s?.session_id);
  t.equal(new Set(sessionIds).size, 3, "three distinct ids");
  for (const id of sessionIds) t.match(id, /^session_[0-9a-f]{12}$/);
  t.same(
    sessions.map((s) => s?.dhcp_offer_at),
    [at, at, at],
  );
});
