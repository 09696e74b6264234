import type { Db } from "./db.js";
import type { ListPage, ListQuery } from "./list.js";
import { Table } from "./table.js";

export interface HistoryEvent {
  id: number;
  at: string;
  request_id: string | null;
  user_id: number | null;
  username: string | null;
  resource_type: string;
  resource_id: string | null;
  operation: string;
  status: "success" | "failure";
  duration_ms: number | null;
  machine_id: number | null;
  /** JSON */
  detail: string;
}

const WRITABLE = [
  "at",
  "request_id",
  "user_id",
  "username",
  "resource_type",
  "resource_id",
  "operation",
  "status",
  "duration_ms",
  "machine_id",
  "detail",
] as const satisfies readonly (keyof HistoryEvent)[];

export type NewHistoryEvent = Pick<HistoryEvent, "resource_type" | "operation" | "status"> &
  Partial<Omit<HistoryEvent, "id" | "detail">> & { detail?: unknown };

export const HISTORY_SORTS = ["at", "id", "duration_ms"] as const;

export interface HistoryFilter {
  resource_type?: string | undefined;
  operation?: string | undefined;
  status?: HistoryEvent["status"] | undefined;
  machine_id?: number | undefined;
  user_id?: number | undefined;
  username?: string | undefined;
  /** ISO 8601: at or after. */
  since?: string | undefined;
  /** ISO 8601: strictly before. */
  until?: string | undefined;
}

export class HistoryRepo extends Table<HistoryEvent> {
  constructor(db: Db, clock: () => number = Date.now) {
    super(db, "history_events", WRITABLE, clock, false);
  }

  record(e: NewHistoryEvent): HistoryEvent {
    return this.insert({
      ...e,
      at: e.at ?? new Date(this.clock()).toISOString(),
      detail: JSON.stringify(e.detail ?? {}),
    });
  }

  listRows(q: ListQuery, f: HistoryFilter = {}): ListPage<HistoryEvent> {
    return this.page<HistoryEvent>(
      {
        select: "*",
        from: "history_events",
        where: [
          f.resource_type && "resource_type = @rt",
          f.operation && "operation = @op",
          f.status && "status = @st",
          f.machine_id !== undefined && "machine_id = @mid",
          f.user_id !== undefined && "user_id = @uid",
          f.username && "username = @un",
          f.since && "at >= @since",
          f.until && "at < @until",
        ],
        params: {
          rt: f.resource_type,
          op: f.operation,
          st: f.status,
          mid: f.machine_id,
          uid: f.user_id,
          un: f.username,
          since: f.since,
          until: f.until,
        },
        search: ["resource_type", "operation", "username", "resource_id"],
        sort: { at: "at", id: "id", duration_ms: "duration_ms" },
        tiebreak: "id",
      },
      q,
    );
  }
}
