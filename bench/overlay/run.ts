/**
 * Overlay creation: reflink clone against a full copy, for sparse golden images of 1, 10 and
 * 100 GiB holding 256 MiB of real data, on a loop-mounted XFS (reflink=1).
 *
 *   node --import tsx bench/overlay/run.ts          (root; about a minute; < 3 GiB of disk)
 *
 * Prints a Markdown table; bench/overlay/RESULTS.md records a run.
 */
import { randomBytes } from "node:crypto";
import { copyFile, mkdir, open, rm, statfs } from "node:fs/promises";
import { cpus, release } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { commandRunner } from "../../src/host/exec.js";
import {
  FIEMAP_EXTENT_UNWRITTEN,
  parseXfsIoFiemap,
  summarizeExtents,
} from "../../src/iscsi/overlay/fiemap.js";
import { createReflinkDriver } from "../../src/iscsi/overlay/reflink.js";
import { mountLoopFs } from "../../test/iscsi/overlay/loopfs.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const DATA = 256 * MiB;
const REFLINK_RUNS = 7;
const COPY_RUNS = 3;

interface Case {
  label: string;
  sizeBytes: number;
  /** Size of each written piece; DATA / piece pieces are spread evenly over the image. */
  pieceBytes: number;
}

const CASES: Case[] = [
  { label: "1 GiB", sizeBytes: GiB, pieceBytes: 4 * MiB },
  { label: "10 GiB", sizeBytes: 10 * GiB, pieceBytes: 4 * MiB },
  { label: "100 GiB", sizeBytes: 100 * GiB, pieceBytes: 4 * MiB },
  // A used image is fragmented; clone cost follows extents, not bytes.
  { label: "100 GiB, fragmented", sizeBytes: 100 * GiB, pieceBytes: 16 * 1024 },
];

const run = commandRunner({ timeoutMs: 600_000, maxOutputChars: 256 * 1024 * 1024 });

async function makeImage(path: string, c: Case): Promise<void> {
  const pieces = DATA / c.pieceBytes;
  const stride = Math.floor(c.sizeBytes / pieces / 4096) * 4096;
  const fh = await open(path, "wx");
  try {
    const chunk = randomBytes(Math.max(c.pieceBytes, 4 * MiB));
    for (let i = 0; i < pieces; i++) {
      // Vary the content so no two pieces are equal (no dedup anywhere would matter, but honest).
      chunk.writeUInt32LE(i, 0);
      await fh.write(chunk, 0, c.pieceBytes, i * stride);
    }
    await fh.truncate(c.sizeBytes);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function fsyncFile(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function timed(fn: () => Promise<void>): Promise<number> {
  const started = performance.now();
  await fn();
  return performance.now() - started;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

async function extents(path: string): Promise<{ count: number; written: number; shared: number }> {
  const { stdout } = await run("xfs_io", ["-r", "-c", "fiemap -v", path]);
  const list = parseXfsIoFiemap(stdout).filter((e) => e.flags !== undefined);
  // XFS leaves unwritten (preallocated) extents behind small appending writes; they are mapped
  // and cloned like the others, so both counts are shown.
  const written = list.filter((e) => ((e.flags ?? 0) & FIEMAP_EXTENT_UNWRITTEN) === 0).length;
  return { count: list.length, written, shared: summarizeExtents(list).sharedBytes };
}

async function usedBytes(dir: string): Promise<number> {
  const s = await statfs(dir);
  return (s.blocks - s.bfree) * s.bsize;
}

const fmtMs = (ms: number): string => (ms < 10 ? ms.toFixed(2) : ms.toFixed(0));

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    console.error("needs root: it mounts a loop XFS");
    process.exit(2);
  }
  const benchStarted = performance.now();
  // Apparent size only: the backing file is sparse and holds what is written (< 3 GiB).
  const fs = await mountLoopFs("xfs-reflink", 16 * GiB, "bench");
  const logger = pino({ level: "silent" });
  const rows: string[] = [];
  const notes: string[] = [];
  try {
    const images = join(fs.dir, "images");
    const overlays = join(fs.dir, "overlays");
    const copies = join(fs.dir, "copies");
    await Promise.all([mkdir(images), mkdir(overlays), mkdir(copies)]);
    const driver = createReflinkDriver({ dir: overlays, imageDir: images, logger });
    await driver.check();

    for (const [ci, c] of CASES.entries()) {
      const image = join(images, `golden-${ci}.img`);
      const made = await timed(() => makeImage(image, c));
      const ext = await extents(image);

      const reflinkMs: number[] = [];
      const usedBefore = await usedBytes(fs.dir);
      for (let i = 0; i < REFLINK_RUNS; i++) {
        reflinkMs.push(await timed(async () => void (await driver.create(image, `c${ci}-${i}`))));
      }
      const reflinkSpace = (await usedBytes(fs.dir)) - usedBefore;
      const deleteMs: number[] = [];
      for (let i = 0; i < REFLINK_RUNS; i++) {
        deleteMs.push(await timed(() => driver.delete(`c${ci}-${i}`)));
      }

      const copyMs: number[] = [];
      for (let i = 0; i < COPY_RUNS; i++) {
        const dst = join(copies, `c${ci}-${i}.img`);
        copyMs.push(
          await timed(async () => {
            await run("cp", ["--reflink=never", "--sparse=always", image, dst]);
            await fsyncFile(dst);
          }),
        );
        if (i === 0) {
          const copyExt = await extents(dst);
          if (copyExt.shared !== 0) notes.push(`${c.label}: cp --reflink=never shared blocks!`);
        }
        await rm(dst);
      }

      // Node's copyFile without FICLONE goes through copy_file_range, which XFS may serve with
      // a clone anyway: measured to say whether "without FICLONE" is really a copy.
      const plain = join(copies, `plain-${ci}.img`);
      const plainMs = await timed(async () => {
        await copyFile(image, plain);
        await fsyncFile(plain);
      });
      const plainShared = (await extents(plain)).shared;
      await rm(plain);

      const r = median(reflinkMs);
      const k = median(copyMs);
      rows.push(
        `| ${c.label} | ${ext.written} + ${ext.count - ext.written} | ${fmtMs(r)} (${fmtMs(Math.min(...reflinkMs))}–${fmtMs(Math.max(...reflinkMs))}) | ${fmtMs(median(deleteMs))} | ${fmtMs(k)} | ${(k / r).toFixed(0)}× | ${(DATA / MiB / (k / 1000)).toFixed(0)} | ${fmtMs(plainMs)} ${plainShared > 0 ? "(cloned)" : "(copied)"} | ${(reflinkSpace / REFLINK_RUNS / 1024).toFixed(0)} |`,
      );
      console.error(`${c.label}: image made in ${made.toFixed(0)} ms, ${ext.count} mapped extents`);
      await rm(image);
    }
  } finally {
    await fs.cleanup();
  }

  const { stdout: xfsVer } = await run("mkfs.xfs", ["-V"]);
  const { stdout: cpVer } = await run("cp", ["--version"]);
  console.log(
    `Machine: ${cpus().length} × ${cpus()[0]?.model ?? "?"}, Linux ${release()}, Node ${process.version}, ${xfsVer.trim()}, ${cpVer.split("\n")[0]}; loop-mounted XFS (reflink=1) on a sparse file.\n`,
  );
  console.log(
    `Each image: 256 MiB of random data spread evenly in pieces, rest sparse. Reflink: driver.create() (clone + fsync + link + dir fsync), median of ${REFLINK_RUNS} (min–max). Full copy: \`cp --reflink=never --sparse=always\` + fsync, median of ${COPY_RUNS}, warm page cache.\n`,
  );
  console.log(
    "| image | extents (written + unwritten) | reflink create ms | reflink delete ms | full copy ms | copy / reflink | copy MiB/s | fs.copyFile (no flag) ms | space per overlay KiB |",
  );
  console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
  for (const row of rows) console.log(row);
  for (const n of notes) console.log(`\n${n}`);
  console.log(`\nWhole benchmark: ${((performance.now() - benchStarted) / 1000).toFixed(0)} s.`);
}

await main();
