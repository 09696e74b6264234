import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readdir, rename, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pino } from "pino";
import t from "tap";
import { commandRunner } from "../../../src/host/exec.js";
import { OverlayError } from "../../../src/iscsi/overlay/errors.js";
import { createReflinkDriver, REFLINK_FIX } from "../../../src/iscsi/overlay/reflink.js";
import type { OverlayDriver } from "../../../src/iscsi/overlay/types.js";
import { OVERLAY_COMMANDS } from "../../../src/iscsi/overlay/types.js";
import { isRoot, type LoopFs, mountLoopFs } from "./loopfs.js";

const logger = pino({ level: "silent" });
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const skipUnlessRoot = isRoot ? false : "needs root: mounts loop XFS, ext4 and tmpfs file systems";

async function sha256(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

async function writeAt(path: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(path, "r+");
  try {
    await fh.write(data, 0, data.length, offset);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function readAt(path: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(path, "r");
  try {
    const buf = Buffer.alloc(length);
    await fh.read(buf, 0, length, offset);
    return buf;
  } finally {
    await fh.close();
  }
}

/** A sparse image of `sizeBytes` with `dataBytes` of random data at its start. */
async function makeImage(path: string, sizeBytes: number, dataBytes: number): Promise<void> {
  const fh = await open(path, "wx");
  try {
    for (let off = 0; off < dataBytes; off += 4 * MiB) {
      await fh.write(randomBytes(Math.min(4 * MiB, dataBytes - off)), 0, undefined, off);
    }
    await fh.truncate(sizeBytes);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Bytes of `path` not shared with another file, by filefrag (e2fsprogs), a tool independent of
 * the xfs_io output the driver reads: its "shared" flag is FIEMAP_EXTENT_SHARED.
 */
async function uniqueBytesByFilefrag(path: string): Promise<number> {
  const { stdout } = await commandRunner()("filefrag", ["-s", "-v", path]);
  const blockSize = Number(/blocks of (\d+) bytes/.exec(stdout)?.[1]);
  let unique = 0;
  for (const line of stdout.split("\n")) {
    const m = /^\s*\d+:\s*\d+\.\.\s*\d+:\s*\d+\.\.\s*\d+:\s*(\d+):(.*)$/.exec(line);
    if (m && !/shared/.test(m[2] ?? "")) unique += Number(m[1]) * blockSize;
  }
  return unique;
}

function codeOf(err: unknown): string | undefined {
  return err instanceof OverlayError ? err.code : undefined;
}

t.test(
  "reflink overlays on a loop-mounted XFS (reflink=1)",
  { skip: skipUnlessRoot },
  async (t) => {
    const fs: LoopFs = await mountLoopFs("xfs-reflink", 2 * GiB, "xfs");
    t.teardown(() => fs.cleanup());
    const images = join(fs.dir, "images");
    const overlays = join(fs.dir, "overlays");
    await mkdir(images);
    await mkdir(overlays);
    const image = join(images, "golden.img");
    // 48 MiB of data in a 256 MiB image: real extents to share, and a sparse tail.
    await makeImage(image, 256 * MiB, 48 * MiB);
    const imageHash = await sha256(image);
    const driver: OverlayDriver = createReflinkDriver({ dir: overlays, imageDir: images, logger });

    await t.resolves(driver.check(), "check accepts XFS with reflink");
    t.same(await readdir(overlays), [], "check leaves no probe file behind");

    const a = await driver.create(image, "pc-a");
    const b = await driver.create(image, "pc-b");
    t.same(a, { kind: "file", path: join(overlays, "pc-a.img"), sizeBytes: 256 * MiB }, "ref of a");
    t.equal(b.path, join(overlays, "pc-b.img"));
    t.equal(await sha256(a.path), imageHash, "a fresh overlay reads as the image");
    t.equal(await sha256(b.path), imageHash, "so does the second one");

    const fresh = await driver.usage("pc-a");
    t.equal(fresh.uniqueBytes, 0, "a fresh clone holds no bytes of its own");
    t.ok(
      fresh.allocatedBytes >= 48 * MiB,
      "allocatedBytes counts the blocks shared with the image",
    );

    // The machine behind "pc-a" writes 1 MiB at 8 MiB (inside the image's data) and 64 KiB in
    // the sparse tail.
    const written = randomBytes(MiB);
    await writeAt(a.path, 8 * MiB, written);
    await writeAt(a.path, 200 * MiB, randomBytes(64 * 1024));
    const writtenBytes = MiB + 64 * 1024;

    t.equal(await sha256(image), imageHash, "the image is unchanged by the overlay's writes");
    t.equal(await sha256(b.path), imageHash, "the other overlay is unchanged");
    t.same(await readAt(a.path, 8 * MiB, MiB), written, "the overlay reads back what was written");

    const ua = await driver.usage("pc-a");
    const ub = await driver.usage("pc-b");
    t.comment(
      `usage after writing ${writtenBytes} bytes: a=${JSON.stringify(ua)} b=${JSON.stringify(ub)}`,
    );
    t.ok(
      ua.uniqueBytes !== undefined &&
        ua.uniqueBytes >= writtenBytes &&
        ua.uniqueBytes <= writtenBytes + 256 * 1024,
      `uniqueBytes of a (${ua.uniqueBytes}) is about what was written (${writtenBytes})`,
    );
    t.ok(
      ub.uniqueBytes !== undefined && ub.uniqueBytes <= 64 * 1024,
      "the other overlay stays near 0",
    );
    t.equal(ua.uniqueBytes, await uniqueBytesByFilefrag(a.path), "filefrag agrees on unique bytes");
    // The poll's way: one xfs_io over every overlay, cut per file, must say what usage() says.
    const all = await driver.usageAll!(["pc-a", "pc-b", "pc-none"]);
    t.same(
      Object.fromEntries(all),
      { "pc-a": ua, "pc-b": ub },
      "usageAll of a, b and a missing one: a's and b's usage, the missing one left out",
    );

    const again = await driver.create(image, "pc-a");
    t.same(again, a, "create of an existing overlay returns the same ref");
    t.same(await readAt(a.path, 8 * MiB, MiB), written, "and keeps the machine's writes");

    const [c1, c2] = await Promise.all([
      driver.create(image, "pc-c"),
      driver.create(image, "pc-c"),
    ]);
    t.same(c1, c2, "two concurrent creates of one overlay agree");
    // A second driver on the same folder stands for another process: link() must not replace.
    const other = createReflinkDriver({ dir: overlays, logger });
    const [c3, c4] = await Promise.all([driver.create(image, "pc-d"), other.create(image, "pc-d")]);
    t.same(c3, c4, "two processes creating one overlay agree");
    await writeAt(c3.path, 0, Buffer.from("machine d was here"));
    await other.create(image, "pc-d");
    t.same(
      await readAt(c3.path, 0, 18),
      Buffer.from("machine d was here"),
      "a create from another process keeps the existing overlay",
    );
    await driver.delete("pc-c");
    await other.delete("pc-d");

    // A clone a crash left behind is not an overlay, and check() sweeps it.
    await writeFile(join(overlays, ".pc-c.tmp-deadbeef0000"), "half");
    t.same(await driver.list(), ["pc-a", "pc-b"], "list finds both overlays and not the temp file");
    await driver.check();
    t.same(
      (await readdir(overlays)).sort(),
      ["pc-a.img", "pc-b.img"],
      "check removed the leftover",
    );

    const reset = await driver.reset(image, "pc-a");
    t.same(reset, a, "reset returns the same ref");
    t.equal(await sha256(a.path), imageHash, "reset restores the image's content");
    t.equal((await driver.usage("pc-a")).uniqueBytes, 0, "and frees what the machine wrote");

    await driver.delete("pc-b");
    await t.rejects(stat(b.path), { code: "ENOENT" }, "delete removes the file");
    t.same(await driver.list(), ["pc-a"], "list no longer has it");
    await t.resolves(driver.delete("pc-b"), "deleting a missing overlay is not an error");
    await t.rejects(driver.usage("pc-b"), { code: "NOT_FOUND" }, "usage of a missing overlay");

    for (const bad of ["../pc-a", "a/b", "", ".hidden", "-rf", "..", "a..b", "x".repeat(101)]) {
      await t.rejects(
        driver.create(image, bad),
        { code: "INVALID_NAME" },
        `id ${JSON.stringify(bad)} is refused`,
      );
    }
    const moved = join(images, "moved.img");
    await rename(image, moved);
    t.same(
      await driver.create(image, "pc-a"),
      a,
      "an existing overlay is served without its image",
    );
    await t.rejects(driver.reset(image, "pc-a"), { code: "NOT_FOUND" }, "reset needs the image");
    t.same(await driver.list(), ["pc-a"], "and a failed reset keeps the overlay");
    await rename(moved, image);

    const missing = join(images, "nope.img");
    const err = await driver.create(missing, "pc-x").catch((e: unknown) => e);
    t.equal(codeOf(err), "NOT_FOUND", "a missing image is NOT_FOUND");
    t.match((err as Error).message, /pc-x.*nope\.img/, "and the error names the overlay and image");
    t.same((await readdir(overlays)).sort(), ["pc-a.img"], "no stray files after all of that");

    // Clone time does not grow with the image's apparent size.
    const small = join(images, "small.img");
    const big = join(images, "big.img");
    await makeImage(small, 10 * MiB, 10 * MiB);
    await makeImage(big, 10 * GiB, 10 * MiB);
    const timeCreate = async (img: string, id: string): Promise<number> => {
      const started = performance.now();
      await driver.create(img, id);
      return performance.now() - started;
    };
    const smallMs = await timeCreate(small, "time-10m");
    const bigMs = await timeCreate(big, "time-10g");
    t.comment(
      `clone of a 10 MiB image: ${smallMs.toFixed(1)} ms; of a 10 GiB sparse image: ${bigMs.toFixed(1)} ms`,
    );
    t.equal(
      (await stat(join(overlays, "time-10g.img"))).size,
      10 * GiB,
      "the 10 GiB overlay has its size",
    );
  },
);

t.test(
  "an overlay folder on another file system than the image",
  { skip: skipUnlessRoot },
  async (t) => {
    const xfs = await mountLoopFs("xfs-reflink", 2 * GiB, "xdev");
    t.teardown(() => xfs.cleanup());
    const other = await mountLoopFs("tmpfs", 64 * MiB, "xdevtmp");
    t.teardown(() => other.cleanup());
    const image = join(other.dir, "golden.img");
    await makeImage(image, 8 * MiB, MiB);
    const driver = createReflinkDriver({ dir: xfs.dir, imageDir: other.dir, logger });
    await t.rejects(
      driver.check(),
      { code: "CROSS_DEVICE" },
      "check refuses folders on two file systems",
    );
    const err = await driver.create(image, "pc-x").catch((e: unknown) => e);
    t.equal(codeOf(err), "CROSS_DEVICE", "create refuses with EXDEV mapped to CROSS_DEVICE");
    t.match((err as Error).message, /different file systems/);
    t.same(await readdir(xfs.dir), [], "no file is left in the overlay folder");
  },
);

for (const kind of ["ext4", "tmpfs", "xfs-noreflink"] as const) {
  t.test(
    `a ${kind} overlay folder is refused, never copied`,
    { skip: skipUnlessRoot },
    async (t) => {
      const fs = await mountLoopFs(kind, kind === "tmpfs" ? 64 * MiB : 512 * MiB, kind);
      t.teardown(() => fs.cleanup());
      const overlays = join(fs.dir, "overlays");
      await mkdir(overlays);
      const image = join(fs.dir, "golden.img");
      await makeImage(image, 32 * MiB, 4 * MiB);
      const driver = createReflinkDriver({ dir: overlays, imageDir: fs.dir, logger });
      const fsName = kind === "ext4" ? "ext2/ext3/ext4" : kind === "tmpfs" ? "tmpfs" : "xfs";

      const checkErr = await driver.check().catch((e: unknown) => e);
      t.equal(codeOf(checkErr), "NO_REFLINK", "check refuses");
      t.ok(
        (checkErr as Error).message.includes(`the ${fsName} file system`),
        "naming the file system type",
      );
      t.ok((checkErr as Error).message.includes(REFLINK_FIX), "and the fix");

      const err = await driver.create(image, "pc-a").catch((e: unknown) => e);
      t.equal(codeOf(err), "NO_REFLINK", "create refuses too");
      t.match(
        (err as Error).message,
        /overlay "pc-a".*golden\.img/,
        "naming the overlay and the image",
      );
      t.same(await readdir(overlays), [], "and leaves no file behind (no silent full copy)");
      t.same(await driver.list(), [], "list is empty");
    },
  );
}

t.test(
  "a full XFS gives a NO_SPACE error and no half-made overlay",
  { skip: skipUnlessRoot },
  async (t) => {
    // 320 MiB is about the smallest XFS mkfs.xfs makes.
    const fs = await mountLoopFs("xfs-reflink", 320 * MiB, "full");
    t.teardown(() => fs.cleanup());
    const image = join(fs.dir, "golden.img");
    await makeImage(image, 64 * MiB, 8 * MiB);
    const overlays = join(fs.dir, "overlays");
    await mkdir(overlays);
    const driver = createReflinkDriver({ dir: overlays, logger });
    await driver.create(image, "before-full");

    // Preallocation fills the file system without writing data, so the loop file stays sparse.
    const run = commandRunner(OVERLAY_COMMANDS);
    for (let i = 0; i < 40; i++) {
      const { statfs } = await import("node:fs/promises");
      const s = await statfs(fs.dir);
      const free = s.bavail * s.bsize;
      if (free < 4096) break;
      await run("xfs_io", ["-f", "-c", `falloc 0 ${free}`, join(fs.dir, `fill-${i}`)])
        .catch(() =>
          run("xfs_io", [
            "-f",
            "-c",
            `falloc 0 ${Math.floor(free / 2)}`,
            join(fs.dir, `fill-${i}`),
          ]),
        )
        .catch(() => {});
    }
    const err = await driver.create(image, "pc-full").catch((e: unknown) => e);
    t.equal(codeOf(err), "NO_SPACE", "create on a full file system is NO_SPACE");
    t.match(
      (err as Error).message,
      /overlay "pc-full".*full \(ENOSPC\)/,
      "and says the disk is full",
    );
    t.same(
      (await readdir(overlays)).sort(),
      ["before-full.img"],
      "no temp or partial overlay remains",
    );
    t.same(await driver.list(), ["before-full"]);
  },
);
