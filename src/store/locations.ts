import type { Db } from "./db.js";
import { type ListPage, type ListQuery, sortColumns } from "./list.js";
import { Table } from "./table.js";

/** A room: machines belong to one or to none. */
export interface Location {
  id: number;
  name: string;
  description: string;
  /** Menu time-out of its machines that set none (NULL: the global setting). */
  menu_timeout_seconds: number | null;
  /** Whether its machines' menus offer the local disk (NULL: no). */
  menu_local_disk: number | null;
  created_at: string;
  updated_at: string;
}

/** A room as listed: with how many machines are in it. */
export type LocationRow = Location & { machine_count: number };

export const LOCATION_SORTS = ["name", "id", "created_at"] as const;

const ROW_SELECT =
  "l.*, (SELECT count(*) FROM machines m WHERE m.location_id = l.id) AS machine_count";

export class LocationsRepo extends Table<Location> {
  constructor(db: Db, clock: () => number = Date.now) {
    super(
      db,
      "locations",
      ["name", "description", "menu_timeout_seconds", "menu_local_disk"],
      clock,
    );
  }

  create(
    l: Pick<Location, "name"> &
      Partial<Pick<Location, "description" | "menu_timeout_seconds" | "menu_local_disk">>,
  ): Location {
    return this.insert(l);
  }

  getRow(id: number): LocationRow | undefined {
    return this.stmt(`SELECT ${ROW_SELECT} FROM locations l WHERE l.id = ?`).get(id) as
      | LocationRow
      | undefined;
  }

  listRows(q: ListQuery): ListPage<LocationRow> {
    return this.page<LocationRow>(
      {
        select: ROW_SELECT,
        from: "locations l",
        search: ["l.name", "l.description"],
        sort: sortColumns("l", LOCATION_SORTS),
        tiebreak: "l.id",
      },
      q,
    );
  }

  /** Ids of the machines in a room, for bulk actions on it. */
  machineIds(id: number): number[] {
    return (
      this.stmt("SELECT id FROM machines WHERE location_id = ? ORDER BY id").all(id) as {
        id: number;
      }[]
    ).map((r) => r.id);
  }
}
