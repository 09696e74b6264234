import type { Db } from "./db.js";
import type { ImageVersion } from "./images.js";
import { Table } from "./table.js";
import { nowIso } from "./util.js";

/** A version as listed: with who made it and how many targets and drafts rest on it. */
export type ImageVersionRow = ImageVersion & {
  created_by_username: string | null;
  /** Targets pinned to it or whose overlay was cloned from it, open drafts and snapshots based on it. */
  in_use_by: number;
};

// A version is in use when a target pins it, a target's overlay (or extra disk) was cloned
// from it or serves it (a persistent machine keeps booting it), an open update's draft
// rests on it, a writeback snapshot rests on it (a restore puts its target back on it), or
// it is current.
const IN_USE_BY = `(
  (SELECT count(*) FROM targets t WHERE (t.system_image_id = v.image_id
     AND (t.system_image_version = v.version OR t.overlay_version = v.version))
     OR (t.extra_disk_image_id = v.image_id AND t.extra_overlay_version = v.version))
  + (SELECT count(*) FROM image_updates u WHERE u.image_id = v.image_id
     AND u.status = 'open' AND u.base_version = v.version)
  + (SELECT count(*) FROM target_snapshots s WHERE s.image_id = v.image_id
     AND s.image_version = v.version))`;

/** The versions of images (the golden files or volumes machines clone their overlays from). */
export class ImageVersionsRepo {
  constructor(
    private readonly db: Db,
    private readonly clock: () => number = Date.now,
  ) {}

  list(imageId: number): ImageVersionRow[] {
    return this.db
      .prepare(
        `SELECT v.*, u.username AS created_by_username, ${IN_USE_BY} AS in_use_by
         FROM image_versions v LEFT JOIN users u ON u.id = v.created_by
         WHERE v.image_id = ? ORDER BY v.version`,
      )
      .all(imageId) as ImageVersionRow[];
  }

  get(imageId: number, version: number): ImageVersionRow | undefined {
    return this.list(imageId).find((v) => v.version === version);
  }

  /** Versions of the image that must be kept whatever the retention says. */
  inUse(imageId: number): Set<number> {
    const image = this.db.prepare("SELECT current_version FROM images WHERE id = ?").get(imageId) as
      | { current_version: number | null }
      | undefined;
    const out = new Set<number>(
      this.list(imageId)
        .filter((v) => v.in_use_by > 0)
        .map((v) => v.version),
    );
    if (image?.current_version != null) out.add(image.current_version);
    return out;
  }

  /** Removes a version's row; its file or volume is the caller's to delete afterwards. */
  delete(imageId: number, version: number): boolean {
    return (
      this.db
        .prepare("DELETE FROM image_versions WHERE image_id = ? AND version = ?")
        .run(imageId, version).changes > 0
    );
  }

  /** Makes an existing version the one machines boot (rollback, or commit's last step). */
  setCurrent(imageId: number, version: number): void {
    this.db
      .prepare("UPDATE images SET current_version = ?, updated_at = ? WHERE id = ?")
      .run(version, nowIso(this.clock), imageId);
  }

  /** Ids of images with more versions than `keep`: the retention job's candidates. */
  imagesWithMoreThan(keep: number): number[] {
    return (
      this.db
        .prepare(
          "SELECT image_id FROM image_versions GROUP BY image_id HAVING count(*) > ? ORDER BY image_id",
        )
        .all(keep) as { image_id: number }[]
    ).map((r) => r.image_id);
  }
}

export type UpdateStatus = "open" | "committed" | "discarded";

export interface ImageUpdate {
  id: number;
  image_id: number;
  machine_id: number;
  base_version: number;
  status: UpdateStatus;
  /** The overlay id of the super-client's writable draft. */
  draft_overlay: string;
  /** When the super-client first booted the draft; a draft never booted has nothing to commit. */
  draft_booted_at: string | null;
  comment: string;
  committed_version: number | null;
  created_by: number | null;
  created_at: string;
  updated_at: string;
  closed_at: string | null;
}

export type ImageUpdateRow = ImageUpdate & { machine_name: string | null };

const UPDATE_WRITABLE = [
  "image_id",
  "machine_id",
  "base_version",
  "status",
  "draft_overlay",
  "draft_booted_at",
  "comment",
  "committed_version",
  "created_by",
  "closed_at",
] as const satisfies readonly (keyof ImageUpdate)[];

const UPDATE_ROW = `SELECT u.*, m.name AS machine_name FROM image_updates u
  LEFT JOIN machines m ON m.id = u.machine_id`;

/** Updates of images: the super-client cycle (open → committed or discarded). */
export class ImageUpdatesRepo extends Table<ImageUpdate> {
  constructor(db: Db, clock: () => number = Date.now) {
    super(db, "image_updates", UPDATE_WRITABLE, clock);
  }

  getRow(id: number): ImageUpdateRow | undefined {
    return this.stmt(`${UPDATE_ROW} WHERE u.id = ?`).get(id) as ImageUpdateRow | undefined;
  }

  list(imageId: number): ImageUpdateRow[] {
    return this.stmt(`${UPDATE_ROW} WHERE u.image_id = ? ORDER BY u.id DESC`).all(
      imageId,
    ) as ImageUpdateRow[];
  }

  /** The image's open update, if any (there is at most one). */
  openFor(imageId: number): ImageUpdateRow | undefined {
    return this.stmt(`${UPDATE_ROW} WHERE u.image_id = ? AND u.status = 'open'`).get(imageId) as
      | ImageUpdateRow
      | undefined;
  }

  /** The open update a machine is the super-client of, for an image it boots. */
  openOnMachine(machineId: number, imageId: number): ImageUpdate | undefined {
    return this.stmt(
      "SELECT * FROM image_updates WHERE machine_id = ? AND image_id = ? AND status = 'open'",
    ).get(machineId, imageId) as ImageUpdate | undefined;
  }

  countOpen(): number {
    return this.count("status = 'open'");
  }

  /** Every open update's draft overlay id: they belong to no target, and are not orphans. */
  openDraftOverlays(): string[] {
    return (
      this.stmt("SELECT draft_overlay FROM image_updates WHERE status = 'open'").all() as {
        draft_overlay: string;
      }[]
    ).map((r) => r.draft_overlay);
  }

  create(u: Pick<ImageUpdate, "image_id" | "machine_id" | "base_version"> & Partial<ImageUpdate>) {
    return this.insert({ draft_overlay: "", ...u });
  }

  /** The super-client booted its draft: from now on there is something to commit. */
  markBooted(id: number) {
    const u = this.get(id);
    if (u && u.draft_booted_at === null) this.update(id, { draft_booted_at: nowIso(this.clock) });
  }

  close(id: number, status: "committed" | "discarded", committedVersion?: number) {
    return this.update(id, {
      status,
      closed_at: nowIso(this.clock),
      ...(committedVersion !== undefined ? { committed_version: committedVersion } : {}),
    });
  }
}
