import { constants as fsConstants } from "node:fs";
import { copyFile, link, open, stat, unlink } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { errnoCode, NO_CLONE_ERRNOS, OverlayError } from "./errors.js";
import { validateOverlayId } from "./names.js";
import { syncDir, tempPath } from "./overlay-files.js";
import type { OverlayRef } from "./types.js";

/**
 * Image versions on a reflink file system: a version is a reflinked clone of a draft
 * overlay, published in the image folder. Cloning shares every extent, so freezing a
 * 100 GB draft costs metadata only; writes to the draft afterwards never reach the version.
 */
export async function freezeReflinkVersion(
  overlayPath: string,
  imageDir: string,
  name: string,
): Promise<OverlayRef> {
  validateOverlayId(name);
  const dest = join(resolve(imageDir), `${name}.raw`);
  const tmp = tempPath(resolve(imageDir), name);
  try {
    await copyFile(overlayPath, tmp, fsConstants.COPYFILE_FICLONE_FORCE);
    const fh = await open(tmp, "r");
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    // link() never replaces: an existing version file of that name is an error, not lost.
    await link(tmp, dest);
    await syncDir(dirname(dest));
  } catch (err) {
    const code = errnoCode(err);
    if (code !== undefined && NO_CLONE_ERRNOS.has(code)) {
      throw new OverlayError(
        "NO_REFLINK",
        `cannot reflink ${overlayPath} into ${dest} (${code}): the image folder must be on the same reflink file system as the overlays; bootfleet never makes a version by a full copy`,
        { path: dest, cause: err },
      );
    }
    if (code === "EXDEV") {
      throw new OverlayError(
        "CROSS_DEVICE",
        `cannot reflink ${overlayPath} into ${dest}: the overlay and image folders are on different file systems (EXDEV)`,
        { path: dest, cause: err },
      );
    }
    if (code === "EEXIST") {
      throw new OverlayError("IO", `version file ${dest} already exists; it was kept as it is`, {
        path: dest,
        cause: err,
      });
    }
    throw new OverlayError(
      code === "ENOENT" ? "NOT_FOUND" : "IO",
      `cannot make version ${basename(dest)} from ${overlayPath}: ${(err as Error).message}`,
      { path: dest, cause: err },
    );
  } finally {
    await unlink(tmp).catch(() => {});
  }
  return { kind: "file", path: dest, sizeBytes: (await stat(dest)).size };
}

/** Deletes a version file; a missing one is already deleted. */
export async function deleteReflinkVersion(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if (errnoCode(err) !== "ENOENT") throw err;
  }
}
