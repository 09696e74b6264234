import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import { KeyedLock } from "../lib/keyed-lock.js";
import type { Store } from "../store/index.js";
import type { TargetSnapshotRow } from "../store/target-snapshots.js";
import type { Target } from "../store/targets.js";
import { VersionError } from "./version-errors.js";
import {
  type ReserveAnswer,
  recordOrDelete,
  requireWriteback,
  type VersionService,
} from "./versions.js";

export interface SnapshotServiceDeps {
  store: Store;
  log: Logger;
  /** Events go out through it; the disk work through its VersionStorage. */
  versions: VersionService;
  /** The free-space reserve: a snapshot holds blocks the machine overwrites later. */
  reserve?: () => Promise<ReserveAnswer>;
}

/**
 * Writeback snapshots of persistent machines: take (a clone of the system overlay, in
 * constant time), list, restore (the machine off), delete. A snapshot's bytes follow its
 * row: deleting it, its target or its machine queues the file for the iSCSI side.
 */
export class SnapshotService {
  readonly #d: SnapshotServiceDeps;
  /** One change per target at a time: a restore never races a delete of its snapshot. */
  readonly #perTarget = new KeyedLock<number>();

  constructor(deps: SnapshotServiceDeps) {
    this.#d = deps;
  }

  list(targetId: number): TargetSnapshotRow[] {
    return this.#d.store.targetSnapshots.list(this.#target(targetId).id);
  }

  /**
   * Taken while the machine runs, a snapshot is crash-consistent (what a power cut
   * leaves); shut the machine down first for a clean one.
   */
  take(targetId: number, comment: string, userId: number | null): Promise<TargetSnapshotRow> {
    return this.#perTarget.run(targetId, async () => {
      const s = this.#d.store;
      const target = this.#target(targetId);
      const machine = s.machines.get(target.machine_id)!;
      requireWriteback(machine.name, machine.overlay_policy, target, "take a snapshot");
      this.#refuseDraft(target, machine.name, "snapshot");
      const storage = this.#d.versions.storage();
      const r = await this.#d.reserve?.();
      if (r && !r.ok) {
        throw new VersionError("insufficient_space", `a snapshot is refused: ${r.reason}`);
      }
      const name = `snap-t${target.id}-${randomBytes(4).toString("hex")}`;
      const started = performance.now();
      const clone = await storage.cloneOverlay(target.id, name, false);
      const row = await recordOrDelete(storage, clone.path, () => {
        const created = s.targetSnapshots.create({
          target_id: target.id,
          image_id: target.system_image_id,
          image_version: target.overlay_version,
          path: clone.path,
          size_bytes: clone.sizeBytes,
          comment,
          created_by: userId,
        });
        return s.targetSnapshots.getRow(created.id)!;
      });
      this.#d.versions.publish(target.system_image_id, "snapshot_taken", {
        target_id: target.id,
        machine_id: target.machine_id,
        snapshot_id: row.id,
      });
      this.#d.log.info(
        { target_id: target.id, snapshot_id: row.id, ms: Math.round(performance.now() - started) },
        "writeback snapshot taken",
      );
      return row;
    });
  }

  /** The machine's overlay becomes the snapshot's content again: its later writes are gone. */
  restore(targetId: number, snapshotId: number): Promise<Target> {
    return this.#perTarget.run(targetId, async () => {
      const s = this.#d.store;
      const target = this.#target(targetId);
      const snap = this.#snapshot(target, snapshotId);
      const machine = s.machines.get(target.machine_id)!;
      if (machine.overlay_policy === "reset") {
        throw new VersionError(
          "reset_policy",
          `cannot restore: machine ${machine.name} resets its overlay at every boot (overlay_policy reset), so the restored disk would be thrown away at its next boot; make it persistent first`,
          { machine_id: machine.id, target_id: target.id },
        );
      }
      if (snap.image_id !== target.system_image_id) {
        throw new VersionError(
          "snapshot_mismatch",
          `snapshot ${snap.id} is of image ${snap.image_id}, but target ${target.name} boots image ${target.system_image_id} now`,
          { snapshot_id: snap.id, image_id: snap.image_id },
        );
      }
      this.#refuseDraft(target, machine.name, "restore");
      const storage = this.#d.versions.storage();
      await storage.restoreOverlay(target.id, snap.path, snap.image_version);
      this.#d.versions.publish(target.system_image_id, "snapshot_restored", {
        target_id: target.id,
        machine_id: target.machine_id,
        snapshot_id: snap.id,
        ...(snap.image_version !== null ? { version: snap.image_version } : {}),
      });
      this.#d.log.info({ target_id: target.id, snapshot_id: snap.id }, "snapshot restored");
      return s.targets.get(target.id)!;
    });
  }

  /** Deletes the row, then its file (a failure there stays queued and is retried). */
  delete(targetId: number, snapshotId: number): Promise<TargetSnapshotRow> {
    return this.#perTarget.run(targetId, async () => {
      const s = this.#d.store;
      const target = this.#target(targetId);
      const snap = this.#snapshot(target, snapshotId);
      s.targetSnapshots.delete(snap.id);
      try {
        await this.#d.versions.storage().collectGarbage();
      } catch (err) {
        // Without the iSCSI side the file waits in storage_garbage for its next start.
        if (!(err instanceof VersionError)) throw err;
      }
      this.#d.versions.publish(target.system_image_id, "snapshot_deleted", {
        target_id: target.id,
        machine_id: target.machine_id,
        snapshot_id: snap.id,
      });
      return snap;
    });
  }

  /** The super-client of an open update boots the draft, not its own overlay. */
  #refuseDraft(target: Target, machineName: string, what: string): void {
    const open = this.#d.store.imageUpdates.openOnMachine(
      target.machine_id,
      target.system_image_id,
    );
    if (open) {
      throw new VersionError(
        "update_open",
        `cannot ${what}: machine ${machineName} is the super-client of open update ${open.id} and boots its draft; commit or discard the update first`,
        { update_id: open.id, machine_id: target.machine_id },
      );
    }
  }

  #target(id: number): Target {
    const target = this.#d.store.targets.get(id);
    if (!target) throw new VersionError("not_found", `no target ${id}`);
    return target;
  }

  #snapshot(target: Target, id: number): TargetSnapshotRow {
    const snap = this.#d.store.targetSnapshots.getRow(id);
    if (!snap || snap.target_id !== target.id) {
      throw new VersionError("not_found", `target ${target.name} has no snapshot ${id}`);
    }
    return snap;
  }
}
