// The daemon's WAL checkpoints wait for a quiet moment (src/store/wal-checkpoints.ts), on a
// real SQLite file: what is observed is the database file itself, which only a checkpoint
// writes (every commit goes to the WAL).
import { statSync } from "node:fs";
import { join } from "node:path";
import { pino } from "pino";
import t from "tap";
import { openStore } from "../../src/store/db.js";
import { WalCheckpoints } from "../../src/store/wal-checkpoints.js";
import { tempDir } from "../helpers/daemon.js";

const PAGE_ROWS = 4; // rows of ~1 KiB per 4 KiB page

function freshDb(t: { teardown(fn: () => void): void }) {
  const path = join(tempDir(t), "bf.db");
  const db = openStore({ path, busyTimeoutMs: 1000, migrations: [] });
  t.teardown(() => db.close());
  db.exec("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB)");
  const insert = db.prepare("INSERT INTO blobs (body) VALUES (randomblob(1000))");
  /** Commits `pages` pages' worth of rows, one small transaction per page. */
  const write = (pages: number) => {
    const tx = db.transaction(() => {
      for (let i = 0; i < PAGE_ROWS; i++) insert.run();
    });
    for (let i = 0; i < pages; i++) tx();
  };
  const dbFileBytes = () => statSync(path).size;
  return { db, write, dbFileBytes };
}

t.test("commits do not checkpoint; a quiet moment does", async (t) => {
  const { db, write, dbFileBytes } = freshDb(t);
  let now = 1_000_000;
  const cp = new WalCheckpoints(db, { quietMs: 2000, maxDeferMs: 60_000, now: () => now });
  cp.start(3_600_000); // the test drives tick() itself
  t.teardown(() => cp.stop());
  const before = dbFileBytes();
  // 3,000 pages: SQLite's own checkpoint would have run in the commit past 1,000.
  write(3000);
  t.equal(dbFileBytes(), before, "3,000 pages committed, the database file untouched");
  t.equal(cp.tick(), undefined, "a write just seen: no checkpoint");
  now += 1500;
  t.equal(cp.tick(), undefined, "1.5 s quiet: still none");
  now += 600;
  const r = cp.tick();
  t.ok(r && r.frames >= 3000 && r.copied === r.frames, `2.1 s quiet: all copied (${r?.copied})`);
  t.ok(dbFileBytes() >= before + 3000 * 4096, `the database file holds them (${dbFileBytes()})`);
  now += 10_000;
  t.equal(cp.tick(), undefined, "nothing written since: nothing to do");
});

t.test("what was written before it started (the migrations) is checkpointed too", async (t) => {
  const { db, write, dbFileBytes } = freshDb(t);
  const before = dbFileBytes();
  write(200);
  let now = 0;
  const cp = new WalCheckpoints(db, { now: () => now });
  cp.start(3_600_000);
  t.teardown(() => cp.stop());
  t.equal(cp.tick(), undefined, "not at once");
  now = 2100;
  const r = cp.tick();
  t.ok(r && r.copied >= 200, `2.1 s later, with no write seen: copied ${r?.copied} frames`);
  t.ok(dbFileBytes() >= before + 200 * 4096, "into the database file");
});

t.test("writes that never pause are checkpointed after maxDeferMs", async (t) => {
  const { db, write, dbFileBytes } = freshDb(t);
  let now = 0;
  const cp = new WalCheckpoints(db, { quietMs: 2000, maxDeferMs: 10_000, now: () => now });
  cp.start(3_600_000);
  t.teardown(() => cp.stop());
  const before = dbFileBytes();
  let result: ReturnType<WalCheckpoints["tick"]>;
  let at = 0;
  for (; now <= 20_000 && !result; now += 500) {
    write(20);
    result = cp.tick();
    at = now;
  }
  t.equal(at, 10_000, "the first checkpoint 10 s after the first write, with writes every 0.5 s");
  t.ok(dbFileBytes() > before, "the database file was written");
});

t.test("stop checkpoints what is left and gives SQLite its checkpoints back", async (t) => {
  const { db, write, dbFileBytes } = freshDb(t);
  const cp = new WalCheckpoints(db, { now: () => 0 });
  cp.start(3_600_000);
  const before = dbFileBytes();
  write(50);
  t.equal(dbFileBytes(), before);
  cp.stop();
  t.ok(dbFileBytes() >= before + 50 * 4096, "written to the database file on stop");
  t.equal(db.pragma("wal_autocheckpoint", { simple: true }), 1000, "SQLite's default again");
  const after = dbFileBytes();
  write(1200);
  t.ok(dbFileBytes() > after, "and SQLite checkpoints by itself again");
});

t.test("a checkpoint another connection was running counts as not done", async (t) => {
  let answer = { busy: 1, log: -1, checkpointed: -1 };
  let tries = 0;
  const db = {
    prepare: () => ({ pluck: () => ({ get: () => 0 }) }),
    pragma: (sql: string) => {
      if (!sql.startsWith("wal_checkpoint")) return [];
      tries++;
      return [answer];
    },
    open: true,
  } as unknown as ConstructorParameters<typeof WalCheckpoints>[0];
  let now = 0;
  const cp = new WalCheckpoints(db, { quietMs: 2000, now: () => now });
  now = 2000;
  t.equal(cp.tick()?.frames, -1, "tried; SQLite answered busy");
  now = 2500;
  t.equal(cp.tick(), undefined, "still pending, but not tried on the next look");
  answer = { busy: 0, log: 7, checkpointed: 7 };
  now = 4000;
  t.equal(cp.tick()?.copied, 7, "tried again after another quiet spell");
  now = 10_000;
  t.equal(cp.tick(), undefined, "then nothing is pending");
  t.equal(tries, 2);
});

t.test("a failing checkpoint (a full disk) is retried every 30 s and logged once", async (t) => {
  // A stand-in connection: SQLite cannot be made to fail a checkpoint on demand here.
  let changes = 0;
  let failing = true;
  let tries = 0;
  const db = {
    prepare: () => ({ pluck: () => ({ get: () => changes }) }),
    pragma: (sql: string) => {
      if (!sql.startsWith("wal_checkpoint")) return [];
      tries++;
      if (failing) throw new Error("database or disk is full");
      return [{ busy: 0, log: 10, checkpointed: 10 }];
    },
    open: true,
  } as unknown as ConstructorParameters<typeof WalCheckpoints>[0];
  const lines: { level: number; msg: string }[] = [];
  const log = pino({ level: "debug" }, { write: (l: string) => lines.push(JSON.parse(l)) });
  let now = 0;
  const cp = new WalCheckpoints(db, { quietMs: 2000, now: () => now, log });
  changes = 5;
  cp.tick();
  now = 2100;
  cp.tick();
  t.equal(tries, 1, "tried once the writes were quiet");
  for (now = 2600; now < 32_100; now += 500) cp.tick();
  t.equal(tries, 1, "not again within 30 s");
  now = 32_100;
  cp.tick();
  t.equal(tries, 2, "again after 30 s");
  failing = false;
  now = 62_100;
  const r = cp.tick();
  t.same(r && [r.frames, r.copied], [10, 10], "and it succeeds");
  t.same(
    lines.filter((l) => l.level >= 30).map((l) => [l.level, l.msg]),
    [
      [40, "WAL checkpoint failed: the commits stay in the WAL file; retrying"],
      [30, "WAL checkpoint succeeded again"],
    ],
    "one warning for the streak, one line when it ends",
  );
});
