import type { Db } from "./db.js";
import { Table } from "./table.js";

/** A clone of a persistent machine's system overlay, taken with a comment. */
export interface TargetSnapshot {
  id: number;
  target_id: number;
  /** The system image the overlay belonged to when the snapshot was taken. */
  image_id: number;
  /** The version that overlay rested on (a restore puts the target back on it). */
  image_version: number | null;
  /** The clone's file (reflink) or LV (lvm-thin), made by the overlay driver. */
  path: string;
  size_bytes: number;
  comment: string;
  created_by: number | null;
  created_at: string;
  updated_at: string;
}

export type TargetSnapshotRow = TargetSnapshot & { created_by_username: string | null };

const WRITABLE = [
  "target_id",
  "image_id",
  "image_version",
  "path",
  "size_bytes",
  "comment",
  "created_by",
] as const satisfies readonly (keyof TargetSnapshot)[];

const ROW = `SELECT s.*, u.username AS created_by_username FROM target_snapshots s
  LEFT JOIN users u ON u.id = s.created_by`;

/**
 * Writeback snapshots of targets. Deleting a row (or its target, or its machine) queues
 * its path in storage_garbage through a trigger, so the bytes follow the row.
 */
export class TargetSnapshotsRepo extends Table<TargetSnapshot> {
  constructor(db: Db, clock: () => number = Date.now) {
    super(db, "target_snapshots", WRITABLE, clock);
  }

  getRow(id: number): TargetSnapshotRow | undefined {
    return this.stmt(`${ROW} WHERE s.id = ?`).get(id) as TargetSnapshotRow | undefined;
  }

  list(targetId: number): TargetSnapshotRow[] {
    return this.stmt(`${ROW} WHERE s.target_id = ? ORDER BY s.id`).all(
      targetId,
    ) as TargetSnapshotRow[];
  }

  create(
    s: Pick<TargetSnapshot, "target_id" | "image_id" | "path"> & Partial<TargetSnapshot>,
  ): TargetSnapshot {
    return this.insert(s);
  }

  /** Every snapshot's path: files the storage clean-up must never take for orphans. */
  paths(): string[] {
    return (this.stmt("SELECT path FROM target_snapshots").all() as { path: string }[]).map(
      (r) => r.path,
    );
  }
}

export interface StorageGarbage {
  id: number;
  path: string;
  reason: string;
  attempts: number;
  last_error: string | null;
  created_at: string;
}

/** Paths whose rows are gone and whose bytes the overlay driver still has to delete. */
export class StorageGarbageRepo {
  constructor(private readonly db: Db) {}

  pending(): StorageGarbage[] {
    return this.db.prepare("SELECT * FROM storage_garbage ORDER BY id").all() as StorageGarbage[];
  }

  done(id: number): void {
    this.db.prepare("DELETE FROM storage_garbage WHERE id = ?").run(id);
  }

  failed(id: number, error: string): void {
    this.db
      .prepare("UPDATE storage_garbage SET attempts = attempts + 1, last_error = ? WHERE id = ?")
      .run(error, id);
  }
}
