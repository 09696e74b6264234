import { constants as fsConstants } from "node:fs";
import { copyFile, link, open, readFile, rename, stat, unlink } from "node:fs/promises";
import { release } from "node:os";
import { join, resolve } from "node:path";
import type { Logger } from "pino";
import { CommandError, type CommandRunner, commandRunner } from "../../host/exec.js";
import { errorText } from "../../lib/error-text.js";
import { KeyedLock } from "../../lib/keyed-lock.js";
import { BootSetRecorder } from "../boot-set-recorder.js";
import { applyCowStore, readCowStore } from "./cow-store.js";
import { DmDevices } from "./dm-devices.js";
import { errnoCode, NO_CLONE_ERRNOS, OverlayError } from "./errors.js";
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
  tempPath,
  writeJsonRecord,
} from "./overlay-files.js";
import { type OverlayOwner, ownerMismatch, parseOwner, type QuarantinedOverlay } from "./owner.js";
import { deleteReflinkVersion } from "./reflink-versions.js";
import {
  type CreatedOverlay,
  OVERLAY_COMMANDS,
  type OverlayDriver,
  type OverlayRef,
  type OverlayUsage,
} from "./types.js";

export interface DmSnapshotDriverOptions {
  /** Folder of the per-machine copy-on-write stores (sparse files) and their records. */
  dir: string;
  /** Folder of the image files; versions made by freezeVersion go here. */
  imageDir?: string;
  logger: Logger;
  run?: CommandRunner;
  /** dm-snapshot chunk size in 512-byte sectors (8 = 4 KiB, the size most boot reads are). */
  chunkSectors?: number;
  /** Where sysfs shows block devices (tests). */
  sysBlock?: string;
  /** Where the device nodes are (tests). */
  devDir?: string;
  /** The running kernel's module folder, /lib/modules/<release> (tests). */
  modulesDir?: string;
  /**
   * How long the first boot of a version without a boot set is recorded
   * (boot-set-recorder.ts); 0 or absent: not recorded.
   */
  bootSetRecordMs?: number;
}

const COW_SUFFIX = ".cow";
const META_SUFFIX = ".snap.json";
/** dm names: the id is validated (A-Z a-z 0-9 _ . -, at most 100), so this fits dm's 127. */
const DM_PREFIX = "bfsnap-";
const DM_UUID_PREFIX = "BOOTFLEET-SNAP-";
const SECTOR = 512;

/** What is recorded beside each store: which image file is its origin, and whose it is. */
interface SnapMeta {
  image: string;
  sizeBytes: number;
  chunkSectors: number;
  owner?: OverlayOwner;
}

export const DM_SNAPSHOT_FIX =
  "load the kernel modules dm_snapshot and loop (modprobe dm_snapshot loop; list them in /etc/modules-load.d/) and install dmsetup and util-linux's losetup";

/**
 * Overlays that share the golden image's page cache: each image version is attached once as
 * a read-only, buffered loop device, and each machine's disk is a device-mapper snapshot of
 * it whose writes go to a sparse store of its own (a file, through a direct-I/O loop device).
 * Every machine's reads of unwritten blocks land in the one page cache of the image file, so
 * N machines booting one version read it from disk once. Served as a block device.
 */
/** The driver, with what only dm-snapshot does (the tests end a recording when they choose). */
export interface DmSnapshotOverlays extends OverlayDriver {
  recordBootSet(overlayId: string): Promise<boolean>;
  endBootSetRecording(imagePath: string): Promise<void>;
  close(): Promise<void>;
}

export function createDmSnapshotDriver(options: DmSnapshotDriverOptions): DmSnapshotOverlays {
  return new DmSnapshotDriver(options);
}

class DmSnapshotDriver implements DmSnapshotOverlays {
  readonly name = "dm-snapshot" as const;
  readonly #dir: string;
  readonly #imageDir: string | undefined;
  readonly #log: Logger;
  readonly #dm: DmDevices;
  readonly #chunkSectors: number;
  readonly #devDir: string;
  readonly #modulesDir: string;
  readonly #lock = new KeyedLock();
  /** Attaching an origin and opening it with a snapshot is one step per image file. */
  readonly #originLock = new KeyedLock();
  readonly #recorder: BootSetRecorder;
  /** Devices found running (a previous process's): swept of its stale recordings once. */
  readonly #swept = new Set<string>();

  constructor(o: DmSnapshotDriverOptions) {
    this.#dir = resolve(o.dir);
    this.#imageDir = o.imageDir === undefined ? undefined : resolve(o.imageDir);
    this.#log = o.logger.child({ overlayDriver: "dm-snapshot" });
    this.#dm = new DmDevices(o.run ?? commandRunner(OVERLAY_COMMANDS), o.sysBlock);
    this.#chunkSectors = o.chunkSectors ?? 8;
    this.#devDir = o.devDir ?? "/dev";
    this.#modulesDir = o.modulesDir ?? `/lib/modules/${release()}`;
    this.#recorder = new BootSetRecorder({
      stats: this.#dm,
      windowMs: o.bootSetRecordMs ?? 0,
      log: this.#log,
    });
  }

  #cowPath(id: string): string {
    return join(this.#dir, `${validateOverlayId(id)}${COW_SUFFIX}`);
  }
  #metaPath(id: string): string {
    return join(this.#dir, `${validateOverlayId(id)}${META_SUFFIX}`);
  }
  #dmName(id: string): string {
    return `${DM_PREFIX}${validateOverlayId(id)}`;
  }
  devicePath(id: string): string {
    return `/dev/mapper/${this.#dmName(id)}`;
  }

  async check(): Promise<void> {
    const st = await stat(this.#dir).catch((err: unknown) => {
      throw new OverlayError(
        "NOT_FOUND",
        `overlay folder ${this.#dir} is not usable: ${errorText(err)}`,
        {
          path: this.#dir,
          cause: err,
        },
      );
    });
    if (!st.isDirectory()) {
      throw new OverlayError("NOT_FOUND", `overlay folder ${this.#dir} is not a directory`);
    }
    const missing: string[] = [];
    for (const [dev, what] of [
      ["mapper/control", "device-mapper"],
      ["loop-control", "loop"],
    ] as const) {
      const path = join(this.#devDir, dev);
      if (!(await stat(path).catch(() => undefined))) missing.push(`${what} (${path} is absent)`);
    }
    let targets: string[] = [];
    if (missing.length === 0) {
      try {
        targets = await this.#dm.targets();
      } catch (err) {
        missing.push(`dmsetup (${errorText(err)})`);
      }
      // The kernel loads dm_snapshot itself at the first snapshot table; the package also
      // loads it at boot (modules-load.d), when the daemon may not read /lib/modules.
      if (
        targets.length > 0 &&
        !targets.includes("snapshot") &&
        !(await this.#hasSnapshotModule())
      ) {
        missing.push("the dm-snapshot target (module dm_snapshot is neither loaded nor installed)");
      }
    }
    if (missing.length > 0) {
      throw new OverlayError(
        "COMMAND_FAILED",
        `dm-snapshot overlays need ${missing.join(", ")}: ${DM_SNAPSHOT_FIX}`,
      );
    }
    await this.#sweepLoops();
  }

  async create(
    imagePath: string,
    overlayId: string,
    owner?: OverlayOwner,
  ): Promise<CreatedOverlay> {
    const cow = this.#cowPath(overlayId);
    return this.#lock.run(overlayId, async () => {
      let replaced: CreatedOverlay["replaced"];
      const meta = await this.#readMeta(overlayId);
      if (meta !== undefined && (await exists(cow))) {
        const mismatch = owner && meta.owner ? ownerMismatch(meta.owner, owner) : undefined;
        if (mismatch === undefined) {
          // Adopted: the device survived a daemon restart, or is rebuilt from the store after
          // a reboot (the persistent store keeps the machine's writes).
          if (owner && !meta.owner) await this.#writeMeta(overlayId, { ...meta, owner });
          await this.#activate(overlayId, meta);
          return { kind: "block", path: this.devicePath(overlayId), sizeBytes: meta.sizeBytes };
        }
        const reason = `overlay ${overlayId} not adopted: ${mismatch}`;
        const quarantinedAs = await this.#moveToQuarantine(overlayId, reason);
        if (quarantinedAs !== undefined) replaced = { quarantinedAs, reason };
      }
      const fresh = await this.#freshMeta(imagePath, overlayId, owner);
      const tmp = await this.#newStore(overlayId, fresh.sizeBytes);
      try {
        await rename(tmp, cow);
      } catch (err) {
        await unlink(tmp).catch(() => {});
        throw overlayFsError(err, overlayId, `cannot publish ${cow}`, cow);
      }
      await this.#writeMeta(overlayId, fresh);
      await this.#activate(overlayId, fresh);
      this.#log.info({ overlayId, image: imagePath }, "overlay created");
      return {
        kind: "block",
        path: this.devicePath(overlayId),
        sizeBytes: fresh.sizeBytes,
        ...(replaced ? { replaced } : {}),
      };
    });
  }

  async reset(imagePath: string, overlayId: string, owner?: OverlayOwner): Promise<OverlayRef> {
    const cow = this.#cowPath(overlayId);
    return this.#lock.run(overlayId, async () => {
      const fresh = await this.#freshMeta(imagePath, overlayId, owner);
      // The empty store exists before the old device goes: no space, and the old disk stays.
      const tmp = await this.#newStore(overlayId, fresh.sizeBytes);
      try {
        await this.#deactivate(overlayId);
        await rename(tmp, cow);
      } catch (err) {
        await unlink(tmp).catch(() => {});
        throw err instanceof OverlayError
          ? err
          : overlayFsError(err, overlayId, `cannot replace ${cow}`, cow);
      }
      await this.#writeMeta(overlayId, fresh);
      await this.#activate(overlayId, fresh);
      this.#log.info({ overlayId, image: imagePath }, "overlay reset to its image");
      return { kind: "block", path: this.devicePath(overlayId), sizeBytes: fresh.sizeBytes };
    });
  }

  async delete(overlayId: string): Promise<void> {
    const cow = this.#cowPath(overlayId);
    return this.#lock.run(overlayId, async () => {
      await this.#deactivate(overlayId);
      const had = await unlink(cow).then(
        () => true,
        (err: unknown) => {
          if (errnoCode(err) === "ENOENT") return false;
          throw overlayFsError(err, overlayId, `cannot delete ${cow}`, cow);
        },
      );
      await unlink(this.#metaPath(overlayId)).catch(() => {});
      if (had) this.#log.info({ overlayId }, "overlay deleted");
    });
  }

  quarantine(overlayId: string, reason: string): Promise<string | undefined> {
    validateOverlayId(overlayId);
    return this.#lock.run(overlayId, () => this.#moveToQuarantine(overlayId, reason));
  }

  quarantined(): Promise<QuarantinedOverlay[]> {
    // What the machine wrote: the store's allocated bytes (its origin is kept elsewhere).
    return listQuarantineDir(this.#dir, COW_SUFFIX, (st) => st.blocks * SECTOR);
  }

  async deleteQuarantined(name: string): Promise<boolean> {
    const deleted = await deleteFromQuarantineDir(this.#dir, name, COW_SUFFIX);
    if (deleted) this.#log.warn({ name }, "quarantined overlay deleted");
    return deleted;
  }

  async usage(overlayId: string): Promise<OverlayUsage> {
    const cow = this.#cowPath(overlayId);
    let blocks: number;
    try {
      blocks = (await stat(cow)).blocks;
    } catch (err) {
      throw overlayFsError(err, overlayId, `cannot read ${cow}`, cow);
    }
    // The store holds only what the machine wrote (and its exception table): all of it unique.
    const bytes = blocks * SECTOR;
    return { allocatedBytes: bytes, uniqueBytes: bytes };
  }

  list(): Promise<string[]> {
    return listOverlayFiles(this.#dir, COW_SUFFIX);
  }

  /**
   * A version from a draft: a reflink clone of the draft's origin (no data copied) with the
   * chunks the draft wrote laid over it, so the cost is the bytes written, not the image.
   * On a file system without reflink the origin is copied whole first (the image's size in
   * reads and writes), and the log says so.
   */
  async freezeVersion(overlayId: string, name: string): Promise<OverlayRef> {
    const imageDir = requireImageDir(this.#imageDir);
    validateOverlayId(name);
    return this.#lock.run(overlayId, async () => {
      const meta = await this.#readMeta(overlayId);
      if (meta === undefined) {
        throw new OverlayError("NOT_FOUND", `overlay "${overlayId}" does not exist`, { overlayId });
      }
      const dest = join(imageDir, `${name}.raw`);
      const tmp = tempPath(imageDir, name);
      const started = performance.now();
      let cloned = true;
      try {
        try {
          await copyFile(meta.image, tmp, fsConstants.COPYFILE_FICLONE_FORCE);
        } catch (err) {
          const code = errnoCode(err);
          if (code === undefined || !(NO_CLONE_ERRNOS.has(code) || code === "EXDEV")) throw err;
          cloned = false;
          await copyFile(meta.image, tmp);
        }
        const cow = await open(this.#cowPath(overlayId), "r");
        const out = await open(tmp, "r+");
        let written = 0;
        try {
          const store = await readCowStore(cow);
          if (store) written = await applyCowStore(store, cow, out, meta.sizeBytes);
          await out.sync();
        } finally {
          await cow.close();
          await out.close();
        }
        await link(tmp, dest);
        await syncDir(imageDir);
        this.#log.info(
          {
            overlayId,
            version: dest,
            written_bytes: written,
            origin_copied: cloned ? 0 : meta.sizeBytes,
            ms: Math.round(performance.now() - started),
          },
          cloned
            ? "version made: a reflink clone of the origin with the draft's chunks written over it"
            : "version made by a FULL copy of the origin (the image folder has no reflink) plus the draft's chunks",
        );
      } catch (err) {
        if (errnoCode(err) === "EEXIST") {
          throw new OverlayError(
            "IO",
            `version file ${dest} already exists; it was kept as it is`,
            {
              path: dest,
              cause: err,
            },
          );
        }
        throw err instanceof OverlayError
          ? err
          : overlayFsError(err, overlayId, `cannot make version ${name} from the draft`, dest);
      } finally {
        await unlink(tmp).catch(() => {});
      }
      return { kind: "file", path: dest, sizeBytes: meta.sizeBytes };
    });
  }

  /**
   * The machine is about to boot from this overlay: when its image version has no boot set
   * yet, the reads of this boot are recorded as one (device-mapper statistics on the
   * machine's own device, which sees every read the machine makes). Never rejects.
   */
  recordBootSet(overlayId: string): Promise<boolean> {
    return this.#lock.run(overlayId, async () => {
      const meta = await this.#readMeta(overlayId);
      if (meta === undefined) return false;
      return this.#recorder.start(meta.image, this.#dmName(overlayId), meta.sizeBytes);
    });
  }

  /** The recording of this image version in progress ends now (tests). */
  endBootSetRecording(imagePath: string): Promise<void> {
    return this.#recorder.ended(resolve(imagePath));
  }

  /** Deletes the statistics regions of recordings in progress (a stop: nothing written). */
  close(): Promise<void> {
    return this.#recorder.close();
  }

  deleteVersion(path: string): Promise<void> {
    // A loop device still serving it keeps the inode until its last machine lets go.
    return deleteReflinkVersion(path);
  }

  async #hasSnapshotModule(): Promise<boolean> {
    for (const list of ["modules.dep", "modules.builtin"]) {
      const text = await readFile(join(this.#modulesDir, list), "utf8").catch(() => "");
      if (/(^|\/)dm-snapshot\.ko/m.test(text)) return true;
    }
    return false;
  }

  // --- devices ---

  /** Makes the machine's dm device when it is not there; the origin loop is shared. */
  async #activate(overlayId: string, meta: SnapMeta): Promise<void> {
    const name = this.#dmName(overlayId);
    if (await this.#dm.exists(name)) {
      if (!this.#swept.has(name)) {
        this.#swept.add(name);
        await this.#recorder.sweep(name);
      }
      return;
    }
    this.#swept.add(name);
    await this.#originLock.run(meta.image, async () => {
      // A loop device of the origin about to clear itself (its last machine just went) fails
      // the create once; the second try attaches a fresh one.
      for (let attempt = 1; ; attempt++) {
        const origin = await this.#originLoop(meta.image);
        const cowLoop = await this.#dm.attach(this.#cowPath(overlayId), { readOnly: false });
        const sectors = Math.floor(meta.sizeBytes / SECTOR);
        const table = `0 ${sectors} snapshot ${origin} ${cowLoop} P ${meta.chunkSectors}`;
        try {
          await this.#dm.create(name, `${DM_UUID_PREFIX}${overlayId}`, table);
        } catch (err) {
          await this.#dm.detach(cowLoop).catch(() => {});
          if (attempt < 2) continue;
          if (!(await this.#dm.hasHolders(origin))) await this.#dm.detach(origin).catch(() => {});
          throw new OverlayError(
            "COMMAND_FAILED",
            `overlay "${overlayId}": cannot make its snapshot device: ${errorText(err)}`,
            { overlayId, cause: err },
          );
        }
        // Both loops are now held by the dm device: from here they clear themselves when it goes.
        await this.#dm.detach(cowLoop);
        await this.#dm.detach(origin);
        return;
      }
    });
  }

  /** The one read-only loop device of an image file, attached when there is none. */
  async #originLoop(image: string): Promise<string> {
    const found = (await this.#dm.loops()).find((l) => l.readOnly && l.backFile === image);
    if (found) return found.name;
    this.#log.info({ image }, "image attached as a shared read-only loop device");
    return this.#dm.attach(image, { readOnly: true });
  }

  /** Removes the machine's dm device; its loop devices clear themselves with it. */
  async #deactivate(overlayId: string): Promise<void> {
    const name = this.#dmName(overlayId);
    if (!(await this.#dm.exists(name))) return;
    // A recording on this device ends with it: what the boot read so far is its boot set.
    await this.#recorder.deviceGoing(name);
    try {
      await this.#dm.remove(name);
    } catch (err) {
      const busy = err instanceof CommandError && /busy|in use/i.test(err.detail);
      throw new OverlayError(
        "COMMAND_FAILED",
        `overlay "${overlayId}": cannot remove ${this.devicePath(overlayId)}${busy ? " (still open: is its iSCSI target still up?)" : ""}: ${errorText(err)}`,
        { overlayId, cause: err },
      );
    }
  }

  /**
   * Loop devices of ours that nothing holds: a crash between attaching and making the dm
   * device left them. Only stores in our folder and read-only images are ours to detach.
   */
  async #sweepLoops(): Promise<void> {
    for (const l of await this.#dm.loops()) {
      const ours =
        (l.backFile.startsWith(`${this.#dir}/`) && l.backFile.endsWith(COW_SUFFIX)) ||
        (l.readOnly && this.#imageDir !== undefined && l.backFile.startsWith(`${this.#imageDir}/`));
      if (!ours || (await this.#dm.hasHolders(l.name))) continue;
      this.#log.warn({ loop: l.name, file: l.backFile }, "detaching a loop device nothing uses");
      await this.#dm.detach(l.name).catch(() => {});
    }
  }

  // --- files ---

  async #freshMeta(imagePath: string, overlayId: string, owner?: OverlayOwner): Promise<SnapMeta> {
    const image = resolve(imagePath);
    let st: Awaited<ReturnType<typeof stat>>;
    try {
      st = await stat(image);
    } catch (err) {
      throw overlayFsError(err, overlayId, `image ${image} is not readable`, image);
    }
    if (!st.isFile() || st.size < SECTOR || st.size % SECTOR !== 0) {
      throw new OverlayError(
        "NOT_FOUND",
        `overlay "${overlayId}": image ${image} must be a regular file of whole 512-byte sectors`,
        { overlayId, path: image },
      );
    }
    return {
      image,
      sizeBytes: st.size,
      chunkSectors: this.#chunkSectors,
      ...(owner ? { owner } : {}),
    };
  }

  /**
   * An empty store under a temp name: sparse, so it costs nothing until the machine writes.
   * Sized for a machine that rewrites its whole disk, plus the exception table (16 bytes per
   * chunk) and the header: dm-snapshot invalidates a store that fills up.
   */
  async #newStore(overlayId: string, imageBytes: number): Promise<string> {
    const chunk = this.#chunkSectors * SECTOR;
    const chunks = Math.ceil(imageBytes / chunk);
    const areas = Math.ceil(chunks / (chunk / 16));
    const size = (chunks + areas + 2) * chunk;
    const tmp = tempPath(this.#dir, overlayId);
    try {
      const fh = await open(tmp, "wx", 0o600);
      try {
        await fh.truncate(size);
        await fh.sync();
      } finally {
        await fh.close();
      }
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw overlayFsError(err, overlayId, "cannot make its copy-on-write store", tmp);
    }
    return tmp;
  }

  async #readMeta(overlayId: string): Promise<SnapMeta | undefined> {
    const m = await readJson(this.#metaPath(overlayId));
    if (!m || typeof m.image !== "string" || !Number.isInteger(m.sizeBytes)) return undefined;
    const owner = parseOwner(m.owner);
    return {
      image: m.image,
      sizeBytes: m.sizeBytes as number,
      chunkSectors: Number.isInteger(m.chunkSectors) ? (m.chunkSectors as number) : 8,
      ...(owner ? { owner } : {}),
    };
  }

  #writeMeta(overlayId: string, meta: SnapMeta): Promise<void> {
    return writeJsonRecord(this.#metaPath(overlayId), meta, {
      overlayId,
      what: "cannot record the overlay's origin and owner",
      tmpStem: `${overlayId}.meta`,
      durable: true,
    });
  }

  async #moveToQuarantine(overlayId: string, reason: string): Promise<string | undefined> {
    const cow = this.#cowPath(overlayId);
    if (!(await exists(cow))) return undefined;
    await this.#deactivate(overlayId);
    const meta = await this.#readMeta(overlayId);
    const name = await moveToQuarantineDir(this.#dir, overlayId, cow, COW_SUFFIX, reason, {
      owner: meta?.owner,
      image: meta?.image,
    });
    await unlink(this.#metaPath(overlayId)).catch(() => {});
    this.#log.warn({ overlayId, quarantined_as: name, reason }, "overlay quarantined");
    return name;
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
