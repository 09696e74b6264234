import type { Db } from "./db.js";
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
}
