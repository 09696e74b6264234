import type { Db } from "./db.js";
import type { ListPage, ListQuery } from "./list.js";
import { Table } from "./table.js";

export type TargetType = "system" | "system_game" | "system_data";
export type TargetStatus = "pending" | "active" | "inactive" | "error";

export interface Target {
  id: number;
  name: string;
  description: string;
  iqn: string;
  portal_ip: string;
  portal_port: number;
  target_type: TargetType;
  status: TargetStatus;
  status_reason: string | null;
  machine_id: number;
  system_image_id: number;
  system_image_version: number | null;
  extra_disk_image_id: number | null;
  extra_disk_mountpoint: string | null;
  initiator_iqn: string;
  chap_username: string;
  chap_password: string;
  mutual_chap_username: string | null;
  mutual_chap_password: string | null;
  is_active: number;
  overlay_allocated_bytes: number | null;
  overlay_unique_bytes: number | null;
  overlay_usage_at: string | null;
  overlay_reset_at: string | null;
  /** The version the system overlay was cloned from (NULL: not made yet). */
  overlay_version: number | null;
  /** The version of the extra disk image its LUN serves (games) or its overlay was cloned from (data). */
  extra_overlay_version: number | null;
  created_at: string;
  updated_at: string;
}

const WRITABLE = [
  "name",
  "description",
  "iqn",
  "portal_ip",
  "portal_port",
  "target_type",
  "status",
  "status_reason",
  "machine_id",
  "system_image_id",
  "system_image_version",
  "extra_disk_image_id",
  "extra_disk_mountpoint",
  "initiator_iqn",
  "chap_username",
  "chap_password",
  "mutual_chap_username",
  "mutual_chap_password",
  "is_active",
  "overlay_allocated_bytes",
  "overlay_unique_bytes",
  "overlay_usage_at",
  "overlay_reset_at",
  "overlay_version",
  "extra_overlay_version",
] as const satisfies readonly (keyof Target)[];

export type NewTarget = Pick<
  Target,
  | "name"
  | "iqn"
  | "portal_ip"
  | "machine_id"
  | "system_image_id"
  | "initiator_iqn"
  | "chap_username"
  | "chap_password"
> &
  Partial<Target>;

/** A target as listed: with the names of its machine and images. */
export type TargetRow = Target & {
  system_image_current_version: number | null;
  /** Versions of its image newer than its overlay's (0 for a fresh or reset overlay). */
  versions_behind: number;
  machine_name: string;
  system_image_name: string | null;
  extra_disk_image_name: string | null;
};

export const TARGET_SORTS = ["id", "name", "status", "machine_id", "created_at"] as const;

export interface TargetFilter {
  machine_id?: number | undefined;
  status?: TargetStatus | undefined;
}

// How many versions of its image were made after the one the overlay was cloned from, up
// to the version it follows (current) or pins.
const VERSIONS_BEHIND = `(SELECT count(*) FROM image_versions v WHERE v.image_id = t.system_image_id
  AND v.version > t.overlay_version
  AND v.version <= coalesce(t.system_image_version, si.current_version))`;
const ROW_SELECT = `t.*, m.name AS machine_name, si.name AS system_image_name,
  xi.name AS extra_disk_image_name, si.current_version AS system_image_current_version,
  ${VERSIONS_BEHIND} AS versions_behind`;
const ROW_FROM = `targets t JOIN machines m ON m.id = t.machine_id
  LEFT JOIN images si ON si.id = t.system_image_id LEFT JOIN images xi ON xi.id = t.extra_disk_image_id`;

export class TargetsRepo extends Table<Target> {
  constructor(db: Db, clock: () => number = Date.now) {
    super(db, "targets", WRITABLE, clock);
  }

  getRow(id: number): TargetRow | undefined {
    return this.stmt(`SELECT ${ROW_SELECT} FROM ${ROW_FROM} WHERE t.id = ?`).get(id) as
      | TargetRow
      | undefined;
  }

  listRows(q: ListQuery, f: TargetFilter = {}): ListPage<TargetRow> {
    return this.page<TargetRow>(
      {
        select: ROW_SELECT,
        from: ROW_FROM,
        where: [
          f.machine_id !== undefined && "t.machine_id = @machine",
          f.status && "t.status = @status",
        ],
        params: { machine: f.machine_id, status: f.status },
        search: ["t.name", "t.description", "t.iqn", "m.name"],
        sort: {
          id: "t.id",
          name: "t.name",
          status: "t.status",
          machine_id: "t.machine_id",
          created_at: "t.created_at",
        },
        tiebreak: "t.id",
      },
      q,
    );
  }

  create(t: NewTarget): Target {
    return this.insert(t);
  }

  forMachine(machineId: number): Target[] {
    return this.stmt("SELECT * FROM targets WHERE machine_id = ? ORDER BY id").all(
      machineId,
    ) as Target[];
  }

  /** Every target's id, active or not: their overlays are not orphans. */
  ids(): number[] {
    return (this.stmt("SELECT id FROM targets").all() as { id: number }[]).map((r) => r.id);
  }

  /** Every target, active or not. */
  all(): Target[] {
    return this.stmt("SELECT * FROM targets ORDER BY id").all() as Target[];
  }

  /** Every active target, for the reconciler's start-up pass and session polling. */
  allActive(): Target[] {
    return this.stmt("SELECT * FROM targets WHERE is_active = 1 ORDER BY id").all() as Target[];
  }

  /** Of these machines, those with a target in error, and the first such target's reason. */
  errorsFor(machineIds: readonly number[]): Map<number, string> {
    if (!machineIds.length) return new Map();
    const rows = this.stmt(
      `SELECT machine_id, status_reason FROM targets
       WHERE status = 'error' AND machine_id IN (SELECT value FROM json_each(?)) ORDER BY id DESC`,
    ).all(JSON.stringify(machineIds)) as { machine_id: number; status_reason: string | null }[];
    // Descending ids, so the lowest id (what forMachine().find() would pick) is set last.
    return new Map(rows.map((r) => [r.machine_id, r.status_reason ?? "failed"]));
  }

  /** Targets whose overlay is on an older version than they follow, and the largest gap. */
  versionsBehindSummary(): { behind: number; max: number } {
    const r = this.stmt(
      `SELECT count(*) FILTER (WHERE b > 0) AS behind, coalesce(max(b), 0) AS max FROM
       (SELECT ${VERSIONS_BEHIND} AS b FROM targets t LEFT JOIN images si ON si.id = t.system_image_id)`,
    ).get() as { behind: number; max: number };
    return r;
  }

  /** Whether any target still uses an image (an image in use must not be deleted). */
  usingImage(imageId: number): number {
    return this.count("system_image_id = @i OR extra_disk_image_id = @i", { i: imageId });
  }
}
