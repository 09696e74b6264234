import { randomBytes } from "node:crypto";
import type { Db } from "./db.js";
import type { ListPage, ListQuery } from "./list.js";
import { Table } from "./table.js";
import { nowIso } from "./util.js";

export type SessionStatus = "starting" | "active" | "stopping" | "stopped" | "error";

export interface BootSession {
  id: number;
  session_id: string;
  session_type: string;
  status: SessionStatus;
  machine_id: number;
  target_id: number | null;
  client_ip: string | null;
  server_ip: string | null;
  boot_method: string | null;
  started_at: string;
  ended_at: string | null;
  dhcp_offer_at: string | null;
  tftp_done_at: string | null;
  tftp_file: string | null;
  tftp_bytes: number | null;
  tftp_duration_ms: number | null;
  script_served_at: string | null;
  iscsi_login_at: string | null;
  iscsi_logout_at: string | null;
  error: string | null;
  io_seen_at: string | null;
}

/** The phases of a boot, each stamped once on the machine's current session. */
export type BootPhase = "dhcp_offer_at" | "tftp_done_at" | "script_served_at" | "iscsi_login_at";

const WRITABLE = [
  "session_id",
  "session_type",
  "status",
  "machine_id",
  "target_id",
  "client_ip",
  "server_ip",
  "boot_method",
  "started_at",
  "ended_at",
  "dhcp_offer_at",
  "tftp_done_at",
  "tftp_file",
  "tftp_bytes",
  "tftp_duration_ms",
  "script_served_at",
  "iscsi_login_at",
  "iscsi_logout_at",
  "error",
  "io_seen_at",
] as const satisfies readonly (keyof BootSession)[];

/** A boot session as listed: with the names of its machine and target. */
export type SessionRow = BootSession & { machine_name: string; target_name: string | null };

export const SESSION_SORTS = ["started_at", "id", "status", "machine_id", "ended_at"] as const;

export interface SessionFilter {
  status?: SessionStatus | undefined;
  machine_id?: number | undefined;
  target_id?: number | undefined;
}

const ROW_SELECT = "s.*, m.name AS machine_name, t.name AS target_name";
const ROW_FROM =
  "boot_sessions s JOIN machines m ON m.id = s.machine_id LEFT JOIN targets t ON t.id = s.target_id";

export class SessionsRepo extends Table<BootSession> {
  constructor(db: Db, clock: () => number = Date.now) {
    super(db, "boot_sessions", WRITABLE, clock, false);
  }

  getBySessionId(sessionId: string): BootSession | undefined {
    return this.stmt("SELECT * FROM boot_sessions WHERE session_id = ?").get(sessionId) as
      | BootSession
      | undefined;
  }

  getRowBySessionId(sessionId: string): SessionRow | undefined {
    return this.stmt(`SELECT ${ROW_SELECT} FROM ${ROW_FROM} WHERE s.session_id = ?`).get(
      sessionId,
    ) as SessionRow | undefined;
  }

  listRows(q: ListQuery, f: SessionFilter = {}): ListPage<SessionRow> {
    return this.page<SessionRow>(
      {
        select: ROW_SELECT,
        from: ROW_FROM,
        where: [
          f.status && "s.status = @status",
          f.machine_id !== undefined && "s.machine_id = @machine",
          f.target_id !== undefined && "s.target_id = @target",
        ],
        params: { status: f.status, machine: f.machine_id, target: f.target_id },
        search: ["s.session_id", "m.name", "s.client_ip"],
        sort: {
          started_at: "s.started_at",
          id: "s.id",
          status: "s.status",
          machine_id: "s.machine_id",
          ended_at: "s.ended_at",
        },
        tiebreak: "s.id",
      },
      q,
    );
  }

  /** The machine's session that has not ended yet, if any. */
  current(machineId: number): BootSession | undefined {
    return this.stmt(
      `SELECT * FROM boot_sessions WHERE machine_id = ? AND status IN ('starting','active','stopping')
         ORDER BY id DESC LIMIT 1`,
    ).get(machineId) as BootSession | undefined;
  }

  /** The machine's most recent session, ended or not: what its live state is read from. */
  latest(machineId: number): BootSession | undefined {
    return this.stmt(
      "SELECT * FROM boot_sessions WHERE machine_id = ? ORDER BY id DESC LIMIT 1",
    ).get(machineId) as BootSession | undefined;
  }

  /**
   * The most recent session of each of these machines, in one statement (a list page's
   * live states: one query for the page, not one per row).
   */
  latestFor(machineIds: readonly number[]): Map<number, BootSession> {
    if (!machineIds.length) return new Map();
    const rows = this.stmt(
      `SELECT s.* FROM boot_sessions s WHERE s.id IN (
         SELECT max(id) FROM boot_sessions
         WHERE machine_id IN (SELECT value FROM json_each(?)) GROUP BY machine_id)`,
    ).all(JSON.stringify(machineIds)) as BootSession[];
    return new Map(rows.map((r) => [r.machine_id, r]));
  }

  /** Every machine's most recent session (one row per machine that ever booted). */
  latestPerMachine(): BootSession[] {
    return this.stmt(
      `SELECT s.* FROM boot_sessions s
       WHERE s.id = (SELECT max(id) FROM boot_sessions WHERE machine_id = s.machine_id)`,
    ).all() as BootSession[];
  }

  /** Boots in progress (starting or active), for the sessions gauge. */
  countInProgress(): number {
    return this.count("status IN ('starting','active')");
  }

  start(s: Pick<BootSession, "machine_id"> & Partial<BootSession>): BootSession {
    return this.insert({
      session_id: `session_${randomBytes(6).toString("hex")}`,
      started_at: nowIso(this.clock),
      ...s,
    });
  }

  /**
   * Stamps a boot phase on the machine's current session, opening one when the machine
   * has none (a DHCP offer is usually the first thing seen of a boot).
   */
  stampPhase(machineId: number, phase: BootPhase, extra: Partial<BootSession> = {}): BootSession {
    return this.db.transaction(() => {
      const now = nowIso(this.clock);
      const current = this.current(machineId) ?? this.start({ machine_id: machineId });
      return this.update(current.id, { ...extra, [phase]: now })!;
    })();
  }

  end(id: number, status: "stopped" | "error", error?: string): BootSession | undefined {
    return this.update(id, { status, ended_at: nowIso(this.clock), error: error ?? null });
  }
}
