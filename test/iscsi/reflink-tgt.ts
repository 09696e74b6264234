import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { TestTgtd } from "../fixtures/iscsi/tgtd.js";
import { mountLoopFs } from "./overlay/loopfs.js";

type Teardown = { teardown(fn: () => void | Promise<void>): void };

/**
 * What the reconciler's root-only tests stand on: a 1 GiB loop-mounted XFS (reflink) with
 * an images and an overlays folder, and a tgtd of the test's own. Removed in teardown.
 */
export async function startReflinkTgt(t: Teardown, name: string) {
  const fs = await mountLoopFs("xfs-reflink", 1024 ** 3, name);
  t.teardown(() => fs.cleanup());
  const tgtd = await TestTgtd.start();
  t.teardown(() => tgtd.stop());
  const imagesDir = join(fs.dir, "images");
  const overlaysDir = join(fs.dir, "overlays");
  mkdirSync(imagesDir);
  mkdirSync(overlaysDir);
  return { dir: fs.dir, tgtd, imagesDir, overlaysDir };
}
