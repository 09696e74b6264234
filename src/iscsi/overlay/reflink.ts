import { randomBytes } from "node:crypto";
import { constants as fsConstants } from "node:fs";
import { copyFile, link, lstat, open, readdir, rename, stat, unlink } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Logger } from "pino";
import { CommandError, type CommandRunner, commandRunner } from "../../host/exec.js";
import { errorText } from "../../lib/error-text.js";
import { KeyedLock } from "../../lib/keyed-lock.js";
import { errnoCode, NO_CLONE_ERRNOS, OverlayError } from "./errors.js";
import {
  parseXfsIoFiemap,
  splitXfsIoFiemapByFile,
  summarizeExtents,
  xfsIoFiemapArgs,
} from "./fiemap.js";
import { fileSystemType } from "./fstype.js";
import { validateOverlayId } from "./names.js";
import {
  deleteFromQuarantineDir,
  listOverlayFiles,
  listQuarantineDir,
  moveToQuarantineDir,
  overlayFsError,
  readJson,
  requireImageDir,
  syncDir,
  TMP_MARK,
  tempPath,
  writeJsonRecord,
} from "./overlay-files.js";
import { type OverlayOwner, ownerMismatch, parseOwner, type QuarantinedOverlay } from "./owner.js";
import { deleteReflinkVersion, freezeReflinkVersion } from "./reflink-versions.js";
import {
  type CreatedOverlay,
  OVERLAY_COMMANDS,
  type OverlayDriver,
  type OverlayRef,
  type OverlayUsage,
} from "./types.js";

export interface ReflinkDriverOptions {
  /** Folder of the overlay files; must be on the same XFS (reflink=1) or btrfs as the images. */
  dir: string;
  logger: Logger;
  /** When given, check() also proves the images can be cloned into `dir` (same file system). */
  imageDir?: string;
  /** Runs xfs_io for usage(); defaults to a runner with OVERLAY_COMMANDS' limits. */
  run?: CommandRunner;
  xfsIoPath?: string;
}

const SUFFIX = ".img";
/** Overlays mapped per xfs_io run by usageAll (about 8 KB of arguments). */
const USAGE_BATCH = 100;
// The owner record beside each overlay: <id>.owner.json (never mistaken for an overlay).
const OWNER_SUFFIX = ".owner.json";

export const REFLINK_FIX = "put the overlay folder on XFS made with reflink=1 or on btrfs";

/**
 * Overlays as reflinked copies of the image file: creation costs metadata only, whatever the
 * image size, and each machine's writes land in blocks only its overlay owns.
 */
export function createReflinkDriver(options: ReflinkDriverOptions): OverlayDriver {
  return new ReflinkDriver(options);
}

class ReflinkDriver implements OverlayDriver {
  readonly name = "reflink" as const;
  readonly #dir: string;
  readonly #imageDir: string | undefined;
  readonly #log: Logger;
  readonly #run: CommandRunner;
  readonly #xfsIo: string;
  readonly #lock = new KeyedLock();
  /** Temp names this instance is writing, which a sweep of crash leftovers must not touch. */
  readonly #inFlight = new Set<string>();

  constructor(o: ReflinkDriverOptions) {
    this.#dir = resolve(o.dir);
    this.#imageDir = o.imageDir === undefined ? undefined : resolve(o.imageDir);
    this.#log = o.logger.child({ overlayDriver: "reflink" });
    this.#run = o.run ?? commandRunner(OVERLAY_COMMANDS);
    this.#xfsIo = o.xfsIoPath ?? "xfs_io";
  }

  pathOf(overlayId: string): string {
    return join(this.#dir, `${validateOverlayId(overlayId)}${SUFFIX}`);
  }

  async check(): Promise<void> {
    await this.#requireDir(this.#dir, "overlay folder");
    if (this.#imageDir !== undefined) {
      await this.#requireDir(this.#imageDir, "image folder");
      const [a, b] = await Promise.all([stat(this.#dir), stat(this.#imageDir)]);
      if (a.dev !== b.dev) {
        throw new OverlayError(
          "CROSS_DEVICE",
          `overlay folder ${this.#dir} and image folder ${this.#imageDir} are on different file systems; reflink clones only within one: ${REFLINK_FIX}, the same one as the images`,
          { path: this.#dir },
        );
      }
    }
    await this.#sweepLeftovers();
    await this.#probeClone();
    try {
      await this.#run(this.#xfsIo, ["-V"]);
    } catch (err) {
      this.#log.warn(
        { err: errorText(err) },
        "xfs_io (package xfsprogs) does not run: overlay usage will lack the bytes each machine wrote",
      );
    }
  }

  async create(
    imagePath: string,
    overlayId: string,
    owner?: OverlayOwner,
  ): Promise<CreatedOverlay> {
    const final = this.pathOf(overlayId);
    return this.#lock.run(overlayId, async () => {
      // An existing overlay no longer needs its image (the clone owns its blocks), so a
      // machine keeps booting even when its image was renamed or removed meanwhile.
      const existing = await this.#existingOverlay(final, overlayId);
      let replaced: CreatedOverlay["replaced"];
      if (existing !== undefined) {
        const recorded = owner ? await this.#readOwner(overlayId) : undefined;
        const mismatch = owner && recorded ? ownerMismatch(recorded, owner) : undefined;
        if (mismatch === undefined) {
          // No record: an overlay from before owners were recorded, adopted as it is.
          if (owner && !recorded) await this.#writeOwner(overlayId, owner);
          return { kind: "file", path: final, sizeBytes: existing };
        }
        const reason = `overlay ${overlayId} not adopted: ${mismatch}`;
        const quarantinedAs = await this.#moveToQuarantine(overlayId, reason);
        if (quarantinedAs !== undefined) replaced = { quarantinedAs, reason };
      }
      await this.#imageSize(imagePath, overlayId);
      const started = performance.now();
      const tmp = await this.#cloneToTemp(imagePath, overlayId);
      try {
        // link() publishes the finished clone under its final name and, unlike rename(),
        // fails if a concurrent creator (another process) got there first: never replace.
        await link(tmp, final);
      } catch (err) {
        if (errnoCode(err) !== "EEXIST") {
          throw this.#fsError(err, overlayId, `cannot publish overlay as ${final}`, final);
        }
      } finally {
        await this.#removeTemp(tmp);
      }
      if (owner) await this.#writeOwner(overlayId, owner);
      await this.#syncDir(overlayId);
      const sizeBytes = (await stat(final)).size;
      this.#log.info(
        { overlayId, image: imagePath, ms: Math.round(performance.now() - started) },
        "overlay created",
      );
      return { kind: "file", path: final, sizeBytes, ...(replaced ? { replaced } : {}) };
    });
  }

  async reset(imagePath: string, overlayId: string, owner?: OverlayOwner): Promise<OverlayRef> {
    const final = this.pathOf(overlayId);
    return this.#lock.run(overlayId, async () => {
      const sizeBytes = await this.#imageSize(imagePath, overlayId);
      const tmp = await this.#cloneToTemp(imagePath, overlayId);
      try {
        // rename() swaps atomically: a reader sees the old overlay or the fresh one, never neither.
        await rename(tmp, final);
      } catch (err) {
        await this.#removeTemp(tmp);
        throw this.#fsError(err, overlayId, `cannot replace ${final}`, final);
      }
      this.#inFlight.delete(tmp);
      if (owner) await this.#writeOwner(overlayId, owner);
      await this.#syncDir(overlayId);
      this.#log.info({ overlayId, image: imagePath }, "overlay reset to its image");
      return { kind: "file", path: final, sizeBytes };
    });
  }

  async delete(overlayId: string): Promise<void> {
    const final = this.pathOf(overlayId);
    return this.#lock.run(overlayId, async () => {
      try {
        await unlink(final);
      } catch (err) {
        if (errnoCode(err) === "ENOENT") return;
        throw this.#fsError(err, overlayId, `cannot delete ${final}`, final);
      }
      await unlink(this.#ownerPath(overlayId)).catch(() => {});
      await this.#syncDir(overlayId);
      this.#log.info({ overlayId }, "overlay deleted");
    });
  }

  quarantine(overlayId: string, reason: string): Promise<string | undefined> {
    validateOverlayId(overlayId);
    return this.#lock.run(overlayId, () => this.#moveToQuarantine(overlayId, reason));
  }

  quarantined(): Promise<QuarantinedOverlay[]> {
    return listQuarantineDir(this.#dir, SUFFIX, (st) => st.size);
  }

  async deleteQuarantined(name: string): Promise<boolean> {
    const deleted = await deleteFromQuarantineDir(this.#dir, name, SUFFIX);
    if (deleted) this.#log.warn({ name }, "quarantined overlay deleted");
    return deleted;
  }

  #ownerPath(overlayId: string): string {
    return join(this.#dir, `${overlayId}${OWNER_SUFFIX}`);
  }

  async #readOwner(overlayId: string): Promise<OverlayOwner | undefined> {
    return parseOwner(await readJson(this.#ownerPath(overlayId)));
  }

  #writeOwner(overlayId: string, owner: OverlayOwner): Promise<void> {
    return writeJsonRecord(this.#ownerPath(overlayId), owner, {
      overlayId,
      what: "cannot record the overlay's owner",
      tmpStem: `${overlayId}.owner`,
    });
  }

  /** Moves an overlay (and its owner record) into the quarantine folder; the caller holds the lock. */
  async #moveToQuarantine(overlayId: string, reason: string): Promise<string | undefined> {
    const final = this.pathOf(overlayId);
    if ((await this.#existingOverlay(final, overlayId)) === undefined) return undefined;
    const owner = await this.#readOwner(overlayId);
    const name = await moveToQuarantineDir(this.#dir, overlayId, final, SUFFIX, reason, { owner });
    await unlink(this.#ownerPath(overlayId)).catch(() => {});
    await this.#syncDir(overlayId);
    this.#log.warn({ overlayId, quarantined_as: name, reason }, "overlay quarantined");
    return name;
  }

  async usage(overlayId: string): Promise<OverlayUsage> {
    const final = this.pathOf(overlayId);
    let blocks: number;
    try {
      blocks = (await stat(final)).blocks;
    } catch (err) {
      throw this.#fsError(err, overlayId, `cannot read ${final}`, final);
    }
    const allocatedBytes = blocks * 512;
    let output: string;
    try {
      output = (await this.#run(this.#xfsIo, xfsIoFiemapArgs(final))).stdout;
    } catch (err) {
      if (err instanceof CommandError && err.exitCode === "ENOENT") {
        return { allocatedBytes };
      }
      throw new OverlayError(
        "COMMAND_FAILED",
        `overlay "${overlayId}": cannot read the extent map of ${final}: ${errorText(err)}`,
        { overlayId, path: final, cause: err },
      );
    }
    const { uniqueBytes } = summarizeExtents(parseXfsIoFiemap(output));
    return { allocatedBytes, uniqueBytes };
  }

  async usageAll(overlayIds: readonly string[]): Promise<Map<string, OverlayUsage>> {
    const allocated = new Map<string, number>();
    for (const id of overlayIds) {
      const st = await stat(this.pathOf(id)).catch(() => undefined);
      if (st) allocated.set(id, st.blocks * 512);
    }
    const all = new Map<string, OverlayUsage>();
    const ids = [...allocated.keys()];
    // A bounded command line per xfs_io run; each run is one fork instead of one per overlay.
    for (let i = 0; i < ids.length; i += USAGE_BATCH) {
      const batch = ids.slice(i, i + USAGE_BATCH);
      const paths = batch.map((id) => this.pathOf(id));
      let output: string | undefined;
      try {
        output = (await this.#run(this.#xfsIo, xfsIoFiemapArgs(...paths))).stdout;
      } catch (err) {
        if (!(err instanceof CommandError && err.exitCode === "ENOENT")) {
          // One file gone since its stat fails the whole run: read these one at a time.
          for (const id of batch) {
            const u = await this.usage(id).catch(() => undefined);
            if (u) all.set(id, u);
          }
          continue;
        }
      }
      const maps = output === undefined ? undefined : splitXfsIoFiemapByFile(output, paths);
      batch.forEach((id, k) => {
        const allocatedBytes = allocated.get(id)!;
        const map = maps?.get(paths[k]!);
        all.set(
          id,
          map === undefined
            ? { allocatedBytes }
            : { allocatedBytes, uniqueBytes: summarizeExtents(parseXfsIoFiemap(map)).uniqueBytes },
        );
      });
    }
    return all;
  }

  list(): Promise<string[]> {
    return listOverlayFiles(this.#dir, SUFFIX);
  }

  // Image versions (reflink-versions.ts): a commit freezes a draft overlay into the image folder.
  async freezeVersion(overlayId: string, name: string): Promise<OverlayRef> {
    const imageDir = requireImageDir(this.#imageDir);
    const src = this.pathOf(overlayId);
    return this.#lock.run(overlayId, () => freezeReflinkVersion(src, imageDir, name));
  }

  deleteVersion(path: string): Promise<void> {
    return deleteReflinkVersion(path);
  }

  async #requireDir(dir: string, what: string): Promise<void> {
    let isDir: boolean;
    try {
      isDir = (await stat(dir)).isDirectory();
    } catch (err) {
      throw this.#fsError(err, undefined, `${what} ${dir} is not usable`, dir);
    }
    if (!isDir) {
      throw new OverlayError("NOT_FOUND", `${what} ${dir} is not a directory`, { path: dir });
    }
  }

  async #imageSize(imagePath: string, overlayId: string): Promise<number> {
    let st: Awaited<ReturnType<typeof stat>>;
    try {
      st = await stat(imagePath);
    } catch (err) {
      throw this.#fsError(err, overlayId, `image ${imagePath} is not readable`, imagePath);
    }
    if (!st.isFile()) {
      throw new OverlayError(
        "NOT_FOUND",
        `overlay "${overlayId}": image ${imagePath} is not a regular file`,
        { overlayId, path: imagePath },
      );
    }
    return st.size;
  }

  async #existingOverlay(final: string, overlayId: string): Promise<number | undefined> {
    try {
      const st = await lstat(final);
      if (!st.isFile()) {
        throw new OverlayError(
          "IO",
          `overlay "${overlayId}": ${final} exists but is not a regular file; remove it by hand`,
          { overlayId, path: final },
        );
      }
      return st.size;
    } catch (err) {
      if (errnoCode(err) === "ENOENT") return undefined;
      if (err instanceof OverlayError) throw err;
      throw this.#fsError(err, overlayId, `cannot read ${final}`, final);
    }
  }

  /** Clones the image under a temp name, flushed, and returns that name. */
  async #cloneToTemp(imagePath: string, overlayId: string): Promise<string> {
    const tmp = tempPath(this.#dir, overlayId);
    this.#inFlight.add(tmp);
    try {
      // FICLONE_FORCE: fail rather than silently write a full copy of a 100 GB image.
      await copyFile(imagePath, tmp, fsConstants.COPYFILE_FICLONE_FORCE);
      const fh = await open(tmp, "r");
      try {
        // Published names must never point at a clone the journal has not yet recorded.
        await fh.sync();
      } finally {
        await fh.close();
      }
      return tmp;
    } catch (err) {
      await this.#removeTemp(tmp);
      throw await this.#cloneError(err, imagePath, overlayId, tmp);
    }
  }

  async #cloneError(
    err: unknown,
    imagePath: string,
    overlayId: string | undefined,
    target: string,
  ): Promise<OverlayError> {
    const who = overlayId === undefined ? "" : `overlay "${overlayId}": `;
    const code = errnoCode(err);
    if (code !== undefined && NO_CLONE_ERRNOS.has(code)) {
      const fsType = await fileSystemType(this.#dir);
      return new OverlayError(
        "NO_REFLINK",
        `${who}cannot reflink ${imagePath} into ${target}: the ${fsType} file system of ${this.#dir} does not support reflink copies (${code}); ${REFLINK_FIX}. bootfleet never falls back to a full copy.`,
        { overlayId, path: target, cause: err },
      );
    }
    if (code === "EXDEV") {
      return new OverlayError(
        "CROSS_DEVICE",
        `${who}cannot reflink ${imagePath} into ${target}: the image and the overlay folder ${this.#dir} are on different file systems (EXDEV); ${REFLINK_FIX}, the same one as the images`,
        { overlayId, path: target, cause: err },
      );
    }
    return this.#fsError(err, overlayId, `cannot clone ${imagePath} into ${target}`, target);
  }

  #fsError(err: unknown, overlayId: string | undefined, what: string, path: string): OverlayError {
    // Every file of this driver is in its folder, and it is that folder's space that runs out.
    return overlayFsError(err, overlayId, what, path, this.#dir);
  }

  async #removeTemp(tmp: string): Promise<void> {
    this.#inFlight.delete(tmp);
    try {
      await unlink(tmp);
    } catch (err) {
      if (errnoCode(err) !== "ENOENT") {
        this.#log.warn({ path: tmp, err: errorText(err) }, "cannot remove temporary overlay");
      }
    }
  }

  async #syncDir(overlayId: string): Promise<void> {
    try {
      await syncDir(this.#dir);
    } catch (err) {
      throw this.#fsError(err, overlayId, `cannot flush overlay folder ${this.#dir}`, this.#dir);
    }
  }

  /** Temp clones a crash left behind hold space and are never anyone's overlay. */
  async #sweepLeftovers(): Promise<void> {
    for (const name of await readdir(this.#dir)) {
      if (!name.startsWith(".") || !name.includes(TMP_MARK)) continue;
      const path = join(this.#dir, name);
      if (this.#inFlight.has(path)) continue;
      this.#log.warn({ path }, "removing a temporary overlay left by an interrupted clone");
      await this.#removeTemp(path);
    }
  }

  /** Clones a small file, so a file system without reflink is refused before any machine boots. */
  async #probeClone(): Promise<void> {
    const base = join(this.#dir, `.bootfleet-probe-${randomBytes(8).toString("hex")}`);
    const src = `${base}.src`;
    const dst = `${base}.dst`;
    try {
      const fh = await open(src, "wx");
      try {
        await fh.write(Buffer.alloc(4096, 0x5a));
      } finally {
        await fh.close();
      }
      await copyFile(src, dst, fsConstants.COPYFILE_FICLONE_FORCE);
    } catch (err) {
      throw await this.#cloneError(err, src, undefined, dst);
    } finally {
      await unlink(src).catch(() => {});
      await unlink(dst).catch(() => {});
    }
  }
}
