import { mkdirSync, writeFileSync } from "node:fs";
import { open, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pino } from "pino";
import t from "tap";
import { applyCowStore, readCowStore } from "../../../src/iscsi/overlay/cow-store.js";
import { createDmSnapshotDriver } from "../../../src/iscsi/overlay/dm-snapshot.js";
import { OverlayError } from "../../../src/iscsi/overlay/errors.js";

// The driver itself is proven on real device-mapper and loop devices in the Debian guest
// (test/guest/shared-cache.test.ts); this machine has no device-mapper. Here: what it
// reads of dm-snapshot's on-disk store, and its refusal where the kernel lacks the parts.

const logger = pino({ level: "silent" });
const CHUNK = 4096;

/** A persistent store as the kernel writes it: header, metadata area 0, data chunks. */
function store(exceptions: [oldChunk: number, data: string][], opts: { valid?: number } = {}) {
  const perArea = CHUNK / 16;
  const buf = Buffer.alloc(CHUNK * (2 + exceptions.length));
  buf.writeUInt32LE(0x70416e53, 0);
  buf.writeUInt32LE(opts.valid ?? 1, 4);
  buf.writeUInt32LE(1, 8);
  buf.writeUInt32LE(CHUNK / 512, 12);
  exceptions.forEach(([oldChunk, data], i) => {
    if (i >= perArea) throw new Error("one area only in this fixture");
    const newChunk = 2 + i;
    buf.writeBigUInt64LE(BigInt(oldChunk), CHUNK + i * 16);
    buf.writeBigUInt64LE(BigInt(newChunk), CHUNK + i * 16 + 8);
    buf.write(data, newChunk * CHUNK);
  });
  return buf;
}

t.test("the exception table of a persistent store: which chunks a machine wrote", async (t) => {
  const dir = t.testdir({});
  const cowPath = join(dir, "m.cow");
  // Chunk 3 written twice: the later exception is what the device shows.
  await writeFile(
    cowPath,
    store([
      [3, "first"],
      [0, "zero"],
      [3, "again"],
    ]),
  );
  const origin = join(dir, "origin");
  await writeFile(origin, Buffer.alloc(8 * CHUNK, "o"));
  const cow = await open(cowPath, "r");
  const out = await open(origin, "r+");
  t.teardown(async () => {
    await cow.close();
    await out.close();
  });
  const s = await readCowStore(cow);
  t.same(s, {
    chunkBytes: CHUNK,
    exceptions: [
      { oldChunk: 3, newChunk: 2 },
      { oldChunk: 0, newChunk: 3 },
      { oldChunk: 3, newChunk: 4 },
    ],
  });
  t.equal(await applyCowStore(s!, cow, out, 8 * CHUNK), 2 * CHUNK, "two distinct chunks copied");
  const merged = await readFile(origin);
  t.equal(merged.subarray(0, 4).toString(), "zero");
  t.equal(merged.subarray(3 * CHUNK, 3 * CHUNK + 5).toString(), "again");
  t.equal(merged[CHUNK], "o".charCodeAt(0), "unwritten chunks keep the origin's bytes");
});

t.test("a store the kernel never wrote has no exceptions; an invalid one is refused", async (t) => {
  const dir = t.testdir({ "empty.cow": Buffer.alloc(3 * CHUNK) });
  const empty = await open(join(dir, "empty.cow"), "r");
  t.equal(await readCowStore(empty), undefined);
  await empty.close();
  await writeFile(join(dir, "bad.cow"), store([[1, "x"]], { valid: 0 }));
  const bad = await open(join(dir, "bad.cow"), "r");
  await t.rejects(readCowStore(bad), /marked invalid/);
  await bad.close();
});

t.test("a kernel without device-mapper is refused, saying what to load", async (t) => {
  const dir = t.testdir({ overlays: {}, dev: { "loop-control": "" } });
  const d = createDmSnapshotDriver({
    dir: join(dir, "overlays"),
    logger,
    devDir: join(dir, "dev"),
    run: async () => {
      throw new Error("no command may run when device-mapper is absent");
    },
  });
  const err = await d.check().then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof OverlayError, "an OverlayError");
  t.match((err as Error).message, /device-mapper \(.*mapper\/control is absent\)/);
  t.match((err as Error).message, /modprobe dm_snapshot loop/);
  t.notMatch((err as Error).message, /loop-control is absent/, "loop-control is there: not named");
});

t.test("a kernel whose device-mapper lacks the snapshot target is refused", async (t) => {
  const dir = t.testdir({
    overlays: {},
    dev: { "loop-control": "" },
    modules: {
      "modules.dep": "kernel/drivers/md/dm-thin-pool.ko.xz: kernel/drivers/md/dm-mod.ko.xz\n",
    },
  });
  mkdirSync(join(dir, "dev/mapper"));
  writeFileSync(join(dir, "dev/mapper/control"), "");
  const d = createDmSnapshotDriver({
    dir: join(dir, "overlays"),
    logger,
    devDir: join(dir, "dev"),
    modulesDir: join(dir, "modules"),
    run: async (file) => {
      if (file === "dmsetup") return { stdout: "striped v1.7.0\nlinear v1.4.0\n", stderr: "" };
      throw new Error(`unexpected ${file}`);
    },
  });
  await t.rejects(
    d.check(),
    /the dm-snapshot target \(module dm_snapshot is neither loaded nor installed\)/,
  );
});

t.test("a snapshot module not loaded yet but installed is fine: the kernel loads it", async (t) => {
  const dir = t.testdir({
    overlays: {},
    dev: { "loop-control": "", mapper: { control: "" } },
    modules: {
      "modules.dep": "kernel/drivers/md/dm-snapshot.ko.xz: kernel/drivers/md/dm-bufio.ko.xz\n",
    },
  });
  const d = createDmSnapshotDriver({
    dir: join(dir, "overlays"),
    logger,
    devDir: join(dir, "dev"),
    modulesDir: join(dir, "modules"),
    run: async (file, args) => {
      if (file === "dmsetup") return { stdout: "linear v1.4.0\n", stderr: "" };
      if (file === "losetup" && args[0] === "--list") return { stdout: "", stderr: "" };
      throw new Error(`unexpected ${file}`);
    },
  });
  await d.check();
  t.pass("check() accepts it");
});
