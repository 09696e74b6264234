import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { EventBus } from "../events/bus.js";
import type { JobContext, JobRunner } from "../jobs/runner.js";
import { errorText } from "../lib/error-text.js";
import { KeyedLock } from "../lib/keyed-lock.js";
import type { ImageUpdateRow, ImageVersionRow } from "../store/image-versions.js";
import type { Image } from "../store/images.js";
import type { Store } from "../store/index.js";
import type { Job } from "../store/jobs.js";
import type { Target } from "../store/targets.js";
import { VersionError } from "./version-errors.js";

export const VERSION_RETENTION_JOB = "image_version_retention";

/**
 * What the update cycle needs from the overlay side (wired by the iSCSI room): the room
 * that owns overlays and targets does the disk work; this one decides and records.
 */
export interface VersionStorage {
  /** Clones a draft overlay into a new immutable version named `name`, in constant time. */
  freeze(draftOverlay: string, name: string): Promise<{ path: string; sizeBytes: number }>;
  deleteDraft(draftOverlay: string): Promise<void>;
  deleteVersion(path: string): Promise<void>;
  /** Whether the target's initiator is logged in now (the machine is running). */
  isLive(target: Target): Promise<boolean>;
  /** A fresh overlay of the version the target follows; throws VersionError live_session / insufficient_space. */
  resetTarget(targetId: number): Promise<void>;
  /** Rebuilds a machine's target on its own overlay once its draft is gone. */
  retarget(machineId: number): Promise<void>;
  /**
   * Clones a target's system overlay into an immutable file (or LV) named `name`, in
   * constant time: a writeback snapshot, or a promoted version. `refuseLive`: refused with
   * VersionError live_session while the machine is logged in (checked under its lock).
   */
  cloneOverlay(
    targetId: number,
    name: string,
    refuseLive: boolean,
  ): Promise<{ path: string; sizeBytes: number }>;
  /**
   * Puts a clone (a snapshot) back as the target's system overlay, which then rests on
   * `version`; throws VersionError live_session while the machine is logged in.
   */
  restoreOverlay(targetId: number, path: string, version: number | null): Promise<void>;
  /** Deletes the files (or LVs) queued in storage_garbage; what fails stays queued. */
  collectGarbage(): Promise<void>;
}

export interface ReserveAnswer {
  ok: boolean;
  reason?: string;
}

export interface VersionServiceDeps {
  store: Store;
  log: Logger;
  runner?: JobRunner;
  bus?: EventBus;
  /** Versions kept per image by the retention job (`[images] keep_versions`), besides those in use. */
  keepVersions: number;
  /** The free-space reserve of the image file system (checkReserve of src/diskspace). */
  reserve?: () => Promise<ReserveAnswer>;
}

/**
 * The update cycle of golden images: versions, updates on a super-client, commit,
 * discard, rollback, resets, and the retention of old versions. Every transition is
 * checked here and refused with a VersionError that says why; the disk work goes through
 * VersionStorage, attached once the iSCSI side runs.
 */
export class VersionService {
  readonly #d: VersionServiceDeps;
  #storage: VersionStorage | undefined;
  /** One transition per image at a time: two commits never race for version N+1. */
  readonly #perImage = new KeyedLock<number>();

  constructor(deps: VersionServiceDeps) {
    this.#d = deps;
    deps.runner?.register(VERSION_RETENTION_JOB, (_p, ctx) => this.#retention(ctx));
  }

  attach(storage: VersionStorage): void {
    this.#storage = storage;
  }

  versions(imageId: number): ImageVersionRow[] {
    this.#image(imageId);
    return this.#d.store.imageVersions.list(imageId);
  }

  updates(imageId: number): ImageUpdateRow[] {
    this.#image(imageId);
    return this.#d.store.imageUpdates.list(imageId);
  }

  /** Opens an update: the machine boots a writable draft of the current version next time. */
  openUpdate(
    imageId: number,
    req: { machine_id: number; comment?: string | undefined },
    userId: number | null,
  ): Promise<ImageUpdateRow> {
    return this.#perImage.run(imageId, async () => {
      const s = this.#d.store;
      const image = this.#readyImage(imageId);
      const machine = s.machines.get(req.machine_id);
      if (!machine) {
        throw new VersionError("invalid_reference", `machine_id: no machine ${req.machine_id}`, {
          field: "machine_id",
        });
      }
      // A games or data disk (a target's extra disk) is updated the same way as a system disk.
      const boots = s.targets
        .forMachine(machine.id)
        .some(
          (t) =>
            t.is_active === 1 &&
            (t.system_image_id === image.id || t.extra_disk_image_id === image.id),
        );
      if (!boots) {
        throw new VersionError(
          "machine_not_on_image",
          `machine ${machine.name} does not boot image ${image.name}: give it an active target of this image first`,
          { field: "machine_id", machine_id: machine.id },
        );
      }
      this.#refuseOpen(image);
      let row: ImageUpdateRow;
      try {
        row = s.transaction(() => {
          const u = s.imageUpdates.create({
            image_id: image.id,
            machine_id: machine.id,
            base_version: image.current_version!,
            comment: req.comment ?? "",
            created_by: userId,
          });
          s.imageUpdates.update(u.id, { draft_overlay: `u${u.id}-draft` });
          return s.imageUpdates.getRow(u.id)!;
        });
      } catch (err) {
        // Another request opened one between the check and the insert: the index says no.
        if ((err as { code?: string }).code === "SQLITE_CONSTRAINT_UNIQUE") this.#refuseOpen(image);
        throw err;
      }
      this.publish(image.id, "update_opened", {
        update_id: row.id,
        machine_id: machine.id,
        version: row.base_version,
      });
      this.#d.log.info(
        { image_id: image.id, update_id: row.id, machine: machine.name, base: row.base_version },
        "image update opened: the super-client boots a draft at its next boot",
      );
      return row;
    });
  }

  /** The draft becomes version N+1 (a clone, not a copy) and the current version. */
  commit(
    imageId: number,
    updateId: number,
    comment: string,
    userId: number | null,
  ): Promise<ImageVersionRow> {
    return this.#perImage.run(imageId, async () => {
      const s = this.#d.store;
      const image = this.#image(imageId);
      const update = this.#openUpdate(image, updateId);
      const who = update.machine_name ?? `machine ${update.machine_id}`;
      if (update.draft_booted_at === null) {
        throw new VersionError(
          "not_booted",
          `update ${update.id} has nothing to commit: its super-client ${who} has not booted the draft yet; boot it, make the changes, shut it down, then commit`,
          { update_id: update.id, machine_id: update.machine_id },
        );
      }
      const storage = this.#requireStorage();
      await this.#refuseLive(update.machine_id, "commit: its disk must be consistent");
      const { version, ms } = await this.#addVersion(
        image,
        { note: comment, created_by: userId },
        (name) => storage.freeze(update.draft_overlay, name),
        (v) => s.imageUpdates.close(update.id, "committed", v),
      );
      await this.#closeDraft(update.draft_overlay, update.machine_id);
      this.publish(image.id, "update_committed", {
        update_id: update.id,
        machine_id: update.machine_id,
        version: version.version,
      });
      this.#d.log.info(
        { image_id: image.id, update_id: update.id, version: version.version, ms },
        "image update committed: new current version",
      );
      this.#submitRetention(userId);
      return version;
    });
  }

  discard(imageId: number, updateId: number): Promise<ImageUpdateRow> {
    return this.#perImage.run(imageId, async () => {
      const s = this.#d.store;
      const image = this.#image(imageId);
      const update = this.#openUpdate(image, updateId);
      if (update.draft_booted_at !== null) {
        this.#requireStorage();
        await this.#refuseLive(update.machine_id, "discard: its draft is the disk it runs on");
      }
      s.imageUpdates.close(update.id, "discarded");
      if (this.#storage) await this.#closeDraft(update.draft_overlay, update.machine_id);
      this.publish(image.id, "update_discarded", {
        update_id: update.id,
        machine_id: update.machine_id,
      });
      this.#d.log.info({ image_id: image.id, update_id: update.id }, "image update discarded");
      return s.imageUpdates.getRow(update.id)!;
    });
  }

  /** Makes an earlier (or any existing) version current: the next boots use it. */
  rollback(imageId: number, version: number): Promise<Image> {
    return this.#perImage.run(imageId, async () => {
      const s = this.#d.store;
      const image = this.#image(imageId);
      const known = s.images.versions(image.id).map((v) => v.version);
      if (!known.includes(version)) {
        throw new VersionError(
          "not_found",
          `image ${image.name} has no version ${version} (versions: ${known.join(", ") || "none"})`,
          { field: "version", versions: known },
        );
      }
      this.#refuseOpen(image, "rollback");
      const from = image.current_version;
      s.imageVersions.setCurrent(image.id, version);
      this.publish(image.id, "rolled_back", { version });
      this.#d.log.info({ image_id: image.id, from, to: version }, "image rolled back");
      return s.images.get(image.id)!;
    });
  }

  /** A fresh overlay of the current (or pinned) version for a machine that is off. */
  async resetTarget(targetId: number): Promise<Target> {
    const s = this.#d.store;
    const target = s.targets.get(targetId);
    if (!target) throw new VersionError("not_found", `no target ${targetId}`);
    await this.#requireStorage().resetTarget(target.id);
    const after = s.targets.get(target.id)!;
    this.publish(target.system_image_id, "target_reset", {
      target_id: target.id,
      machine_id: target.machine_id,
      ...(after.overlay_version !== null ? { version: after.overlay_version } : {}),
    });
    return after;
  }

  /**
   * Promotes a persistent machine's writeback: a clone of its system overlay becomes
   * version N+1 of its image (constant time), current unless `make_current` is false.
   * Refused while the machine runs (a disk being written is not a consistent image), for
   * a reset-on-reboot machine, and while the image has an open update.
   */
  async promote(
    targetId: number,
    req: { comment: string; make_current?: boolean | undefined },
    userId: number | null,
  ): Promise<ImageVersionRow> {
    const target = this.#target(targetId);
    return this.#perImage.run(target.system_image_id, async () => {
      const s = this.#d.store;
      const image = this.#readyImage(target.system_image_id);
      const machine = s.machines.get(target.machine_id)!;
      requireWriteback(machine.name, machine.overlay_policy, target, "promote");
      this.#refuseOpen(image, "promote");
      const storage = this.#requireStorage();
      const why = "promote: a writeback being written is not a consistent image";
      await this.#refuseLive(machine.id, why);
      const before = image.current_version;
      const { version, ms } = await this.#addVersion(
        image,
        { note: req.comment, created_by: userId },
        (name) => storage.cloneOverlay(target.id, name, true),
        (v) => {
          if (req.make_current === false && before !== null) {
            s.imageVersions.setCurrent(image.id, before);
          }
          // The machine's disk is that version now: it is not behind it.
          s.targets.update(target.id, { overlay_version: v });
        },
      );
      this.publish(image.id, "promoted", {
        version: version.version,
        machine_id: machine.id,
        target_id: target.id,
      });
      this.#d.log.info(
        {
          image_id: image.id,
          target_id: target.id,
          version: version.version,
          current: req.make_current !== false,
          ms,
        },
        "writeback promoted to an image version",
      );
      this.#submitRetention(userId);
      return version;
    });
  }

  /**
   * Pins a target to one version of its image (null: follows the current one). The next
   * fresh overlay (a reset, or every boot of a reset-on-reboot machine) is of that version;
   * retention never deletes a pinned version.
   */
  async pin(targetId: number, version: number | null): Promise<Target> {
    const target = this.#target(targetId);
    return this.#perImage.run(target.system_image_id, async () => {
      const s = this.#d.store;
      const image = this.#image(target.system_image_id);
      if (version !== null) {
        const known = s.images.versions(image.id).map((v) => v.version);
        if (!known.includes(version)) {
          throw new VersionError(
            "invalid_reference",
            `pinned_version: image ${image.name} has no version ${version} (versions: ${known.join(", ") || "none"})`,
            { field: "pinned_version", versions: known },
          );
        }
      }
      const after = s.targets.update(target.id, { system_image_version: version })!;
      this.publish(image.id, version === null ? "unpinned" : "pinned", {
        target_id: target.id,
        machine_id: target.machine_id,
        ...(version !== null ? { version } : {}),
      });
      return after;
    });
  }

  /** The disk side, or VersionError unavailable while the iSCSI side is not running. */
  storage(): VersionStorage {
    return this.#requireStorage();
  }

  /** Queues the retention job (no-op without a job runner). */
  #submitRetention(userId: number | null): Job | undefined {
    const r = this.#d.runner;
    if (!r) return undefined;
    return r.submit(VERSION_RETENTION_JOB, {}, { createdBy: userId });
  }

  /** Deletes versions beyond the last K of each image that nothing uses. */
  async #retention(ctx: JobContext): Promise<unknown> {
    const s = this.#d.store;
    const deleted: { image_id: number; version: number }[] = [];
    for (const imageId of s.imageVersions.imagesWithMoreThan(this.#d.keepVersions)) {
      ctx.throwIfCancelled();
      const doomed = await this.#perImage.run(imageId, async () => {
        // Decided under the image's lock, in one transaction: nothing starts using a
        // version between the check and the removal of its row.
        const rows = s.transaction(() => {
          const all = s.images.versions(imageId);
          const plan = retentionPlan(
            all.map((v) => v.version),
            this.#d.keepVersions,
            s.imageVersions.inUse(imageId),
          );
          const gone = all.filter((v) => plan.includes(v.version));
          for (const v of gone) s.imageVersions.delete(imageId, v.version);
          return gone;
        });
        for (const v of rows) {
          try {
            await (this.#storage?.deleteVersion(v.path) ?? Promise.resolve());
          } catch (err) {
            ctx.log(
              "warn",
              `version ${v.version} of image ${imageId}: file ${v.path} not removed: ${errorText(err)}`,
            );
          }
          ctx.log("info", `deleted version ${v.version} of image ${imageId}`);
        }
        return rows;
      });
      for (const v of doomed) {
        deleted.push({ image_id: imageId, version: v.version });
        this.publish(imageId, "version_deleted", { version: v.version });
      }
    }
    return { deleted, keep_versions: this.#d.keepVersions };
  }

  async #closeDraft(draftOverlay: string, machineId: number): Promise<void> {
    const storage = this.#requireStorage();
    try {
      await storage.retarget(machineId);
      await storage.deleteDraft(draftOverlay);
    } catch (err) {
      // The version (or the discard) is recorded; a leftover draft only holds space.
      this.#d.log.warn(
        { overlay: draftOverlay, machine_id: machineId, err: errorText(err) },
        "draft overlay not cleaned up",
      );
    }
  }

  async #refuseLive(machineId: number, why: string): Promise<void> {
    const s = this.#d.store;
    const storage = this.#requireStorage();
    for (const t of s.targets.forMachine(machineId)) {
      if (t.is_active !== 1 || !(await storage.isLive(t))) continue;
      const machine = s.machines.get(machineId);
      const session = s.sessions.current(machineId)?.session_id;
      throw new VersionError(
        "live_session",
        `machine ${machine?.name ?? machineId} is running (live iSCSI session${session ? ` ${session}` : ""}); shut it down to ${why}`,
        { machine_id: machineId, session_id: session ?? null },
      );
    }
  }

  /**
   * The image's next version: its file made by `make` (a freeze or a clone, under a fresh
   * name), then its row added with `andThen`'s changes in one transaction. A file whose row
   * cannot be written is deleted again. `ms` is the time the file and row took.
   */
  async #addVersion(
    image: Image,
    row: { note: string; created_by: number | null },
    make: (name: string) => Promise<{ path: string; sizeBytes: number }>,
    andThen: (version: number) => void,
  ): Promise<{ version: ImageVersionRow; ms: number }> {
    const s = this.#d.store;
    const storage = this.#requireStorage();
    await this.#checkReserve("a new version");
    const next = Math.max(0, ...s.images.versions(image.id).map((v) => v.version)) + 1;
    const name = `img${image.id}-v${next}-${randomBytes(4).toString("hex")}`;
    const started = performance.now();
    const made = await make(name);
    const version = await recordOrDelete(storage, made.path, () =>
      s.transaction(() => {
        const v = s.images.addVersion(image.id, {
          path: made.path,
          size_bytes: made.sizeBytes,
          ...row,
        });
        andThen(v.version);
        return s.imageVersions.get(image.id, v.version)!;
      }),
    );
    return { version, ms: Math.round(performance.now() - started) };
  }

  async #checkReserve(what: string): Promise<void> {
    const r = await this.#d.reserve?.();
    if (r && !r.ok) {
      throw new VersionError("insufficient_space", `${what} is refused: ${r.reason}`);
    }
  }

  /**
   * Refuses while the image has an open update: a second one (`what` undefined: one open
   * update per image), or a rollback or promote, which would bypass its draft.
   */
  #refuseOpen(image: Image, what?: string): void {
    const open = this.#d.store.imageUpdates.openFor(image.id);
    if (open) {
      const has = what === undefined ? "already has" : "has";
      const then = what === undefined ? "first (one open update per image)" : `before a ${what}`;
      throw new VersionError(
        "update_open",
        `image ${image.name} ${has} open update ${open.id} on machine ${open.machine_name}: commit or discard it ${then}`,
        { update_id: open.id, machine_id: open.machine_id },
      );
    }
  }

  #openUpdate(image: Image, updateId: number): ImageUpdateRow {
    const u = this.#d.store.imageUpdates.getRow(updateId);
    if (!u || u.image_id !== image.id) {
      throw new VersionError("not_found", `image ${image.name} has no update ${updateId}`);
    }
    if (u.status !== "open") {
      throw new VersionError("update_closed", `update ${u.id} is already ${u.status}`, {
        update_id: u.id,
        status: u.status,
      });
    }
    return u;
  }

  #target(id: number): Target {
    const target = this.#d.store.targets.get(id);
    if (!target) throw new VersionError("not_found", `no target ${id}`);
    return target;
  }

  #image(id: number): Image {
    const image = this.#d.store.images.get(id);
    if (!image) throw new VersionError("not_found", `no image ${id}`);
    return image;
  }

  #readyImage(id: number): Image {
    const image = this.#image(id);
    if (image.status !== "ready" || image.current_version === null) {
      throw new VersionError(
        "not_ready",
        `image ${image.name} is ${image.status}${image.current_version === null ? " and has no version" : ""}: it cannot be updated yet`,
      );
    }
    return image;
  }

  #requireStorage(): VersionStorage {
    if (!this.#storage) {
      throw new VersionError(
        "unavailable",
        "the iSCSI side is not running: versions and overlays cannot be changed now",
      );
    }
    return this.#storage;
  }

  /** Announces a change of the image's versions or of a machine's disk on the bus. */
  publish(
    imageId: number,
    action: string,
    extra: {
      version?: number;
      update_id?: number;
      machine_id?: number;
      target_id?: number;
      snapshot_id?: number;
    },
  ): void {
    this.#d.bus?.publish("image_version_changed", {
      image_id: imageId,
      action,
      current_version: this.#d.store.images.get(imageId)?.current_version ?? null,
      ...extra,
    });
  }
}

/**
 * The versions the retention deletes: those outside the newest `keep`, except any in use
 * (current, pinned, under an overlay or an open draft). Pure, so it is tested on its own.
 */
export function retentionPlan(versions: number[], keep: number, inUse: Set<number>): number[] {
  const newestFirst = [...versions].sort((a, b) => b - a);
  return newestFirst
    .slice(Math.max(0, keep))
    .filter((v) => !inUse.has(v))
    .sort((a, b) => a - b);
}

/**
 * Snapshots and promotes need a writeback: a persistent machine's overlay that exists.
 * Throws reset_policy or no_writeback naming the machine.
 */
export function requireWriteback(
  machineName: string,
  policy: string,
  target: Target,
  what: string,
): void {
  if (policy === "reset") {
    throw new VersionError(
      "reset_policy",
      `cannot ${what}: machine ${machineName} resets its overlay at every boot (overlay_policy reset), so it keeps no writeback; make it persistent first`,
      { machine_id: target.machine_id, target_id: target.id },
    );
  }
  if (target.overlay_version === null) {
    throw new VersionError(
      "no_writeback",
      `cannot ${what}: target ${target.name} has no overlay yet (machine ${machineName} never booted it)`,
      { target_id: target.id },
    );
  }
}

/**
 * Records a file just made (a version or a snapshot) with `record`; a file whose row cannot
 * be written is deleted again, so no file is left that no row knows.
 */
export async function recordOrDelete<T>(
  storage: VersionStorage,
  path: string,
  record: () => T,
): Promise<T> {
  try {
    return record();
  } catch (err) {
    await storage.deleteVersion(path).catch(() => {});
    throw err;
  }
}
