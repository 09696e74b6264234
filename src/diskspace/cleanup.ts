import { lstat, readdir, unlink } from "node:fs/promises";
import { join } from "node:path";
import type { JobContext, JobRunner } from "../jobs/runner.js";

export const STORAGE_CLEANUP_JOB = "storage_cleanup";

export interface Orphan {
  path: string;
  bytes: number;
  reason:
    | "unreferenced image file"
    | "unreferenced snapshot file"
    | "dead upload"
    | "dead overlay temp";
}

export interface OrphanScanOptions {
  imagesDir: string;
  overlaysDir?: string;
  /** Absolute paths of image-folder files something still uses (ImageService.referencedFiles). */
  referencedImageFiles: () => Set<string>;
  /**
   * Kept for callers; overlays themselves are never removed here whatever it says: an
   * overlay no target owns is a machine's disk the database lost, and the iSCSI side
   * quarantines it for an admin to decide (DELETE /api/storage/quarantine/{name}).
   */
  referencedOverlayIds?: () => Set<string>;
  /** Files younger than this are never orphans: they may belong to work in progress. */
  minAgeMs?: number;
  clock?: () => number;
}

// Only names bootfleet makes are ever considered; anything else in the folders is the
// admin's and is left alone.
const IMAGE_FILE = /^img-[0-9a-f-]{36}\.(upload|raw|raw\.part)$/;
const UPLOAD_TEMP = /^\.upload-[0-9a-f]+\.part$/;
// A writeback snapshot's clone (images/snapshots.ts) whose row is gone, e.g. after a crash
// between the clone and its row.
const SNAPSHOT_FILE = /^snap-t\d+-[0-9a-f]{8}\.raw$/;
const OVERLAY_TEMP = /^\.[A-Za-z0-9][A-Za-z0-9_.-]*\.tmp-[0-9a-f]+$/;

/** Lists files of ours that nothing references and that are old enough to be dead. */
export async function findOrphans(opts: OrphanScanOptions): Promise<Orphan[]> {
  const now = (opts.clock ?? Date.now)();
  const minAge = opts.minAgeMs ?? 60 * 60_000;
  const out: Orphan[] = [];
  const referenced = opts.referencedImageFiles();
  for (const name of await listDir(opts.imagesDir)) {
    const upload = UPLOAD_TEMP.test(name);
    const snapshot = SNAPSHOT_FILE.test(name);
    if (!upload && !snapshot && !IMAGE_FILE.test(name)) continue;
    const path = join(opts.imagesDir, name);
    if (referenced.has(path)) continue;
    const st = await fileStat(path);
    if (!st || now - st.mtimeMs < minAge) continue;
    const reason = upload
      ? "dead upload"
      : snapshot
        ? "unreferenced snapshot file"
        : "unreferenced image file";
    out.push({ path, bytes: st.size, reason });
  }
  if (opts.overlaysDir) {
    // Only the temp clones an interrupted create left: never an overlay.
    for (const name of await listDir(opts.overlaysDir)) {
      if (!OVERLAY_TEMP.test(name)) continue;
      const path = join(opts.overlaysDir, name);
      const st = await fileStat(path);
      if (!st || now - st.mtimeMs < minAge) continue;
      out.push({ path, bytes: st.size, reason: "dead overlay temp" });
    }
  }
  return out.sort((a, b) => a.path.localeCompare(b.path));
}

export interface CleanupResult {
  dry_run: boolean;
  files: Orphan[];
  /** Bytes of the files removed (or that would be, in a dry run). */
  bytes: number;
  removed: number;
  failed: { path: string; error: string }[];
}

/**
 * The cleanup job (`POST /storage/cleanup`): scan, then remove; `dry_run` lists without
 * removing. Each file is checked again just before it goes, in case an import started
 * using it since the scan.
 */
export function registerCleanupJob(runner: JobRunner, opts: OrphanScanOptions): void {
  runner.register(STORAGE_CLEANUP_JOB, async (params, ctx) =>
    runCleanup(opts, (params as { dry_run?: boolean }).dry_run !== false, ctx),
  );
}

async function runCleanup(
  opts: OrphanScanOptions,
  dryRun: boolean,
  ctx: JobContext,
): Promise<CleanupResult> {
  const files = await ctx.step("scan", () => findOrphans(opts));
  const bytes = files.reduce((n, f) => n + f.bytes, 0);
  ctx.log("info", `${files.length} orphaned file(s), ${bytes} bytes${dryRun ? " (dry run)" : ""}`);
  const result: CleanupResult = { dry_run: dryRun, files, bytes, removed: 0, failed: [] };
  if (dryRun) {
    ctx.skip("remove", "dry run");
    return result;
  }
  await ctx.step("remove", async () => {
    const stillReferenced = opts.referencedImageFiles();
    for (const [i, f] of files.entries()) {
      ctx.throwIfCancelled();
      if (stillReferenced.has(f.path)) continue;
      try {
        await unlink(f.path);
        result.removed++;
        ctx.log("info", `removed ${f.path} (${f.reason}, ${f.bytes} bytes)`);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        if (e.code === "ENOENT") continue;
        result.failed.push({ path: f.path, error: e.message });
        ctx.log("warn", `cannot remove ${f.path}: ${e.message}`);
      }
      ctx.progress(((i + 1) / files.length) * 100);
    }
  });
  return result;
}

async function listDir(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
}

async function fileStat(path: string) {
  try {
    const st = await lstat(path);
    return st.isFile() ? st : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Removes what interrupted uploads and imports left in the images folder: upload temp
 * files, and the sources and partial outputs of imports no job will finish. Run at start
 * with `minAgeMs` 0 (nothing is being written yet: only one daemon owns the folder) and
 * then on a timer with the default age, so a file still being written is never touched.
 */
export async function sweepDeadUploads(
  opts: OrphanScanOptions,
  log: (msg: string, path: string, bytes: number) => void,
): Promise<number> {
  let removed = 0;
  const { overlaysDir: _overlays, ...imagesOnly } = opts;
  for (const f of await findOrphans(imagesOnly)) {
    const leftover = f.reason === "dead upload" || /\.(upload|raw\.part)$/.test(f.path);
    if (!leftover || opts.referencedImageFiles().has(f.path)) continue;
    try {
      await unlink(f.path);
      removed++;
      log("partial upload removed", f.path, f.bytes);
    } catch {
      // gone already, or not ours to remove: the next sweep tries again
    }
  }
  return removed;
}
