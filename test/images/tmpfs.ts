import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A small tmpfs of our own (root only), unmounted and removed in teardown. */
export function smallTmpfs(
  t: { teardown(fn: () => void | Promise<void>): void },
  sizeBytes: number,
  label: string,
): string {
  const dir = mkdtempSync(join(tmpdir(), `bf-${label}-${process.pid}-`));
  execFileSync("mount", ["-t", "tmpfs", "-o", `size=${sizeBytes},mode=0750`, "tmpfs", dir]);
  t.teardown(async () => {
    // A just-closed file can keep the mount busy for a moment: bounded retries.
    for (let i = 0; ; i++) {
      try {
        execFileSync("umount", [dir]);
        break;
      } catch (err) {
        if (i >= 20) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}
