import { randomBytes } from "node:crypto";
import { open, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/**
 * Replaces `path` so that a crash leaves either the old or the new content, never a
 * mix: write a temp file beside it, fsync it, rename it over, fsync the folder.
 * Mode 0600 from the start, because these files hold CHAP secrets.
 */
export async function writeFileAtomic(path: string, data: string, mode = 0o600): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${randomBytes(8).toString("hex")}.tmp`);
  const fh = await open(tmp, "wx", mode);
  try {
    try {
      await fh.writeFile(data, "utf8");
      // The umask may have narrowed the mode at creation, never widened: set it exactly.
      await fh.chmod(mode);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  const d = await open(dir, "r");
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}
