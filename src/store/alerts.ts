import type { Db } from "./db.js";
import type { ListPage, ListQuery } from "./list.js";
import { Table } from "./table.js";
import { nowIso } from "./util.js";

export type AlertSeverity = "info" | "warning" | "critical";

export interface Alert {
  id: number;
  /** What raised it, stable per kind: "stall", "target_error", "overlay_usage_95", ... */
  cause: string;
  severity: AlertSeverity;
  machine_id: number | null;
  message: string;
  /** JSON object: the phase, the likely causes, figures. */
  detail: string;
  /** How many times the cause was seen while the alert was active. */
  count: number;
  created_at: string;
  last_seen_at: string;
  resolved_at: string | null;
  acknowledged_at: string | null;
  acknowledged_by: number | null;
}

export type AlertRow = Alert & { machine_name: string | null };

export const ALERT_SORTS = ["created_at", "id", "severity", "last_seen_at"] as const;

export interface AlertFilter {
  /** true: unresolved only; false: resolved only. */
  active?: boolean | undefined;
  acknowledged?: boolean | undefined;
  severity?: AlertSeverity | undefined;
  machine_id?: number | undefined;
  /** Only alerts of machines this user owns (what a client may see). */
  visibleTo?: number | undefined;
}

const WRITABLE = [
  "cause",
  "severity",
  "machine_id",
  "message",
  "detail",
  "count",
  "last_seen_at",
  "resolved_at",
  "acknowledged_at",
  "acknowledged_by",
] as const satisfies readonly (keyof Alert)[];

const ROW_SELECT = "a.*, m.name AS machine_name";
const ROW_FROM = "alerts a LEFT JOIN machines m ON m.id = a.machine_id";

export interface RaiseAlert {
  cause: string;
  severity: AlertSeverity;
  machine_id: number | null;
  message: string;
  detail?: Record<string, unknown>;
}

export class AlertsRepo extends Table<Alert> {
  constructor(db: Db, clock: () => number = Date.now) {
    super(db, "alerts", WRITABLE, clock, false);
  }

  getRow(id: number): AlertRow | undefined {
    return this.stmt(`SELECT ${ROW_SELECT} FROM ${ROW_FROM} WHERE a.id = ?`).get(id) as
      | AlertRow
      | undefined;
  }

  /** The unresolved alert of this cause and machine, if any. */
  active(cause: string, machineId: number | null): Alert | undefined {
    return this.stmt(
      "SELECT * FROM alerts WHERE cause = ? AND coalesce(machine_id, 0) = coalesce(?, 0) AND resolved_at IS NULL",
    ).get(cause, machineId) as Alert | undefined;
  }

  /** The machines with an unresolved alert of this cause. */
  machinesWithActive(cause: string): Set<number> {
    const ids = this.stmt(
      "SELECT machine_id FROM alerts WHERE cause = ? AND machine_id IS NOT NULL AND resolved_at IS NULL",
    )
      .pluck()
      .all(cause) as number[];
    return new Set(ids);
  }

  /**
   * Raises an alert, or refreshes the active one of the same cause and machine (one active
   * alert per cause per machine). `created` tells the caller whether it is news.
   */
  raise(a: RaiseAlert): { alert: Alert; created: boolean } {
    return this.db.transaction(() => {
      const now = nowIso(this.clock);
      const detail = JSON.stringify(a.detail ?? {});
      const existing = this.active(a.cause, a.machine_id);
      if (existing) {
        const alert = this.update(existing.id, {
          count: existing.count + 1,
          last_seen_at: now,
          message: a.message,
          severity: a.severity,
          detail,
        })!;
        return { alert, created: false };
      }
      const alert = this.insert({ ...a, detail, last_seen_at: now });
      return { alert, created: true };
    })();
  }

  /** Marks the active alert of this cause and machine resolved (the cause went away). */
  resolve(cause: string, machineId: number | null): Alert | undefined {
    const existing = this.active(cause, machineId);
    if (!existing) return undefined;
    return this.update(existing.id, { resolved_at: nowIso(this.clock) });
  }

  acknowledge(id: number, userId: number | null): Alert | undefined {
    return this.update(id, { acknowledged_at: nowIso(this.clock), acknowledged_by: userId });
  }

  listRows(q: ListQuery, f: AlertFilter = {}): ListPage<AlertRow> {
    return this.page<AlertRow>(
      {
        select: ROW_SELECT,
        from: ROW_FROM,
        where: [
          f.active === true && "a.resolved_at IS NULL",
          f.active === false && "a.resolved_at IS NOT NULL",
          f.acknowledged === true && "a.acknowledged_at IS NOT NULL",
          f.acknowledged === false && "a.acknowledged_at IS NULL",
          f.severity && "a.severity = @severity",
          f.machine_id !== undefined && "a.machine_id = @machine",
          f.visibleTo !== undefined && "m.owner_user_id = @me",
        ],
        params: { severity: f.severity, machine: f.machine_id, me: f.visibleTo },
        search: ["a.message", "a.cause", "m.name"],
        sort: {
          created_at: "a.created_at",
          id: "a.id",
          severity: "CASE a.severity WHEN 'critical' THEN 3 WHEN 'warning' THEN 2 ELSE 1 END",
          last_seen_at: "a.last_seen_at",
        },
        tiebreak: "a.id",
      },
      q,
    );
  }
}
