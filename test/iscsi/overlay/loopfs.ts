import { mkdir, mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execFileRunner } from "../../../src/iscsi/overlay/run.js";

const run = execFileRunner({ timeoutMs: 60_000 });

export type LoopFsKind = "xfs-reflink" | "xfs-noreflink" | "ext4" | "tmpfs";

export interface LoopFs {
  /** Where the file system is mounted. */
  dir: string;
  kind: LoopFsKind;
  /** Unmounts, detaches the loop device and removes the backing file; safe to call twice. */
  cleanup(): Promise<void>;
}

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/**
 * Mounts a throw-away file system in a fresh temp folder. The backing file is sparse, so a
 * 2 GiB XFS costs only what is written into it. Whatever part of the setup succeeded is undone
 * by cleanup(), also when a later step fails.
 */
export async function mountLoopFs(
  kind: LoopFsKind,
  sizeBytes: number,
  label: string,
): Promise<LoopFs> {
  const base = await mkdtemp(join(tmpdir(), `bf-overlay-${process.pid}-${label}-`));
  const backing = join(base, "fs.img");
  const dir = join(base, "mnt");
  let device: string | undefined;
  let mounted = false;
  let cleaned = false;

  const cleanup = async (): Promise<void> => {
    if (cleaned) return;
    cleaned = true;
    if (mounted) {
      // A just-closed file can keep the mount busy for a moment: bounded retries.
      for (let attempt = 0; ; attempt++) {
        try {
          await run("umount", [dir]);
          break;
        } catch (err) {
          if (attempt >= 20) throw err;
          await sleep(250);
        }
      }
    }
    if (device !== undefined) await run("losetup", ["-d", device]).catch(() => {});
    await rm(base, { recursive: true, force: true });
  };

  try {
    await mkdir(dir);
    if (kind === "tmpfs") {
      await run("mount", ["-t", "tmpfs", "-o", `size=${sizeBytes}`, "tmpfs", dir]);
      mounted = true;
      return { dir, kind, cleanup };
    }
    const fh = await open(backing, "wx");
    await fh.truncate(sizeBytes);
    await fh.close();
    if (kind === "ext4") {
      await run("mkfs.ext4", ["-q", "-F", backing]);
    } else {
      const reflink = kind === "xfs-reflink" ? "1" : "0";
      await run("mkfs.xfs", ["-q", "-m", `reflink=${reflink}`, backing]);
    }
    // Another test may grab the same free loop device between find and attach: retry.
    for (let attempt = 0; device === undefined; attempt++) {
      try {
        device = (await run("losetup", ["--find", "--show", backing])).stdout.trim();
      } catch (err) {
        if (attempt >= 5) throw err;
        await sleep(200);
      }
    }
    await run("mount", [device, dir]);
    mounted = true;
    return { dir, kind, cleanup };
  } catch (err) {
    await cleanup().catch(() => {});
    throw err;
  }
}

export const isRoot = process.getuid?.() === 0;
