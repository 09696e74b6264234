import { randomBytes } from "node:crypto";
import type { Db } from "./db.js";
import type { ListPage, ListQuery } from "./list.js";
import type { Offer, TimelineEntry, Transfer } from "./pending-offers.js";
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
  /** How many times this boot's initiator logged in (iPXE's, then the booted OS's own). */
  iscsi_logins: number;
  /** The boot's latest login after its first: the booted OS taking over its disk. */
  iscsi_relogin_at: string | null;
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
  "iscsi_logins",
  "iscsi_relogin_at",
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

/** Whether the session ended because its initiator logged out (`endAtLogout`). */
export function endedByLogout(s: BootSession): boolean {
  return (
    s.status === "stopped" &&
    s.error === null &&
    s.iscsi_logout_at !== null &&
    s.ended_at === s.iscsi_logout_at
  );
}

/** The most recent session of each machine of a JSON array of ids. */
const LATEST_FOR = `SELECT s.* FROM boot_sessions s WHERE s.id IN (
  SELECT max(id) FROM boot_sessions
  WHERE machine_id IN (SELECT value FROM json_each(?)) GROUP BY machine_id)`;

export class SessionsRepo extends Table<BootSession> {
  /** pendingWrites: the offers not yet written, written before any statement of this table. */
  constructor(db: Db, clock: () => number = Date.now, pendingWrites?: () => void) {
    super(db, "boot_sessions", WRITABLE, clock, false);
    this.pendingWrites = pendingWrites;
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

  /**
   * The proxy-DHCP's offers and the iPXE transfers, queued behind the boots
   * (store/pending-offers.ts), in the order they happened: each run of offers at once, each
   * transfer on the session its machine is in by then.
   */
  recordTimeline(entries: readonly TimelineEntry[]): void {
    let offers: Offer[] = [];
    for (const e of entries) {
      if ("offer" in e) {
        offers.push(e.offer);
        continue;
      }
      if (offers.length > 0) this.recordOffers(offers);
      offers = [];
      this.recordTransfer(e.transfer);
    }
    if (offers.length > 0) this.recordOffers(offers);
  }

  /** A transfer of iPXE stamped on the machine's current session (opened if it has none). */
  recordTransfer(x: Transfer): void {
    const fields = { tftp_file: x.file, tftp_bytes: x.bytes, tftp_duration_ms: x.duration_ms };
    this.stampPhaseAt(x.machine_id, "tftp_done_at", x.at, fields);
  }

  /**
   * Proxy-DHCP offers that went out, in one transaction (the DHCP side queues them in
   * `Store.pendingOffers`, which writes them through here together): each is stamped on its
   * machine's session when that boot is still on its way to its script (the firmware's
   * DHCP, then iPXE's, belong to one boot); otherwise the current session ends and a new one
   * starts with the offer, and the machine's boot is counted. A few fixed statements per
   * offer, no re-read of the rows written.
   */
  recordOffers(offers: readonly Offer[]): void {
    const current = this.stmt(
      `SELECT id, status, script_served_at FROM boot_sessions
       WHERE machine_id = ? AND status IN ('starting','active','stopping') ORDER BY id DESC LIMIT 1`,
    );
    const stamp = this.stmt("UPDATE boot_sessions SET dhcp_offer_at = @at WHERE id = @id");
    const end = this.stmt(
      "UPDATE boot_sessions SET status = 'stopped', ended_at = @at, error = NULL WHERE id = @id",
    );
    const start = this.stmt(
      `INSERT INTO boot_sessions (session_id, machine_id, server_ip, boot_method, started_at,
         dhcp_offer_at)
       VALUES (@session_id, @machine_id, @server_ip, @boot_method, @at, @at)`,
    );
    const counted = this.stmt(
      `UPDATE machines SET boot_count = boot_count + 1, last_boot = @at, updated_at = @at
       WHERE id = @id`,
    );
    // One draw of randomness for the batch, not one per offer (a call into OpenSSL each).
    const ids = randomBytes(6 * offers.length).toString("hex");
    this.db.transaction(() => {
      for (const [k, o] of offers.entries()) {
        const cur = current.get(o.machine_id) as
          | Pick<BootSession, "id" | "status" | "script_served_at">
          | undefined;
        if (cur?.status === "starting" && !cur.script_served_at) {
          stamp.run({ at: o.at, id: cur.id });
          continue;
        }
        if (cur) end.run({ at: o.at, id: cur.id });
        start.run({
          session_id: `session_${ids.slice(12 * k, 12 * k + 12)}`,
          machine_id: o.machine_id,
          server_ip: o.server_ip,
          boot_method: o.boot_method,
          at: o.at,
        });
        counted.run({ at: o.at, id: o.machine_id });
      }
    })();
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
    const rows = this.stmt(LATEST_FOR).all(JSON.stringify(machineIds)) as BootSession[];
    return new Map(rows.map((r) => [r.machine_id, r]));
  }

  /**
   * latestFor as written, without writing the queued offers first: for the fleet, told
   * after each write of them, that re-derives the machines written. An offer queued since
   * tells it again once written; writing it now for this read wrote the next turn's
   * offers one turn at a time (a transaction each: the 20 ms batching undone under a
   * steady stream of requests).
   */
  latestWrittenFor(machineIds: readonly number[]): Map<number, BootSession> {
    if (!machineIds.length) return new Map();
    const rows = this.prepared(LATEST_FOR).all(JSON.stringify(machineIds)) as BootSession[];
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
    // The offer that opened this boot's session may be waiting to be written.
    return this.transaction(() => this.stampPhaseAt(machineId, phase, nowIso(this.clock), extra));
  }

  /** stampPhase at a given time, in the caller's transaction. */
  private stampPhaseAt(
    machineId: number,
    phase: BootPhase,
    at: string,
    extra: Partial<BootSession> = {},
  ): BootSession {
    const current =
      this.current(machineId) ?? this.start({ machine_id: machineId, started_at: at });
    return this.update(current.id, { ...extra, [phase]: at })!;
  }

  end(id: number, status: "stopped" | "error", error?: string): BootSession | undefined {
    return this.update(id, { status, ended_at: nowIso(this.clock), error: error ?? null });
  }

  /** The boot's first iSCSI login: the session is active, on that target. */
  firstLogin(id: number, targetId: number, at: string): BootSession | undefined {
    return this.update(id, {
      status: "active",
      iscsi_login_at: at,
      target_id: targetId,
      iscsi_logins: 1,
    });
  }

  /**
   * The initiator logged out: the session ends then. Its end and its logout carry the same
   * instant, which is what tells a session its initiator ended (and a later login of the
   * same boot may take back, see `endedByLogout`) from one an operator or a new PXE phase
   * ended.
   */
  endAtLogout(id: number, at: string): BootSession | undefined {
    return this.update(id, { status: "stopped", ended_at: at, iscsi_logout_at: at, error: null });
  }

  /** A later login of the same boot: the session is live again and counts the login. */
  relogin(id: number, at: string): BootSession | undefined {
    this.stmt(
      `UPDATE boot_sessions SET status = 'active', ended_at = NULL, iscsi_logout_at = NULL,
         iscsi_relogin_at = @at, iscsi_logins = iscsi_logins + 1 WHERE id = @id`,
    ).run({ id, at });
    return this.get(id);
  }
}
