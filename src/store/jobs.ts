import type { Db } from "./db.js";
import { type ListPage, type ListQuery, sortColumns } from "./list.js";
import { Table } from "./table.js";
import { nowIso } from "./util.js";

export type JobStatus = "queued" | "running" | "succeeded" | "failed" | "cancelled";

export interface Job {
  id: number;
  type: string;
  status: JobStatus;
  progress: number;
  /** JSON: [{ name, status }] */
  steps: string;
  /** JSON */
  params: string;
  result: string | null;
  error: string | null;
  created_by: number | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  updated_at: string;
}

export interface JobLog {
  id: number;
  job_id: number;
  at: string;
  level: "debug" | "info" | "warn" | "error";
  message: string;
}

const WRITABLE = [
  "type",
  "status",
  "progress",
  "steps",
  "params",
  "result",
  "error",
  "created_by",
  "started_at",
  "finished_at",
] as const satisfies readonly (keyof Job)[];

/** A job as listed: with the name of the user who started it. */
export type JobRow = Job & { created_by_username: string | null };

export const JOB_SORTS = [
  "id",
  "created_at",
  "started_at",
  "finished_at",
  "status",
  "type",
  "progress",
] as const;

export interface JobFilter {
  status?: JobStatus | undefined;
  type?: string | undefined;
}

const ROW_SELECT = "j.*, u.username AS created_by_username";
const ROW_FROM = "jobs j LEFT JOIN users u ON u.id = j.created_by";

export class JobsRepo extends Table<Job> {
  constructor(db: Db, clock: () => number = Date.now) {
    super(db, "jobs", WRITABLE, clock);
  }

  getRow(id: number): JobRow | undefined {
    return this.stmt(`SELECT ${ROW_SELECT} FROM ${ROW_FROM} WHERE j.id = ?`).get(id) as
      | JobRow
      | undefined;
  }

  listRows(q: ListQuery, f: JobFilter = {}): ListPage<JobRow> {
    return this.page<JobRow>(
      {
        select: ROW_SELECT,
        from: ROW_FROM,
        where: [f.status && "j.status = @status", f.type && "j.type = @type"],
        params: { status: f.status, type: f.type },
        search: ["j.type", "j.error"],
        sort: sortColumns("j", JOB_SORTS),
        tiebreak: "j.id",
      },
      q,
    );
  }

  /** At most `limit` log lines of a job after the line `afterId`, oldest first. */
  logPage(jobId: number, afterId: number, limit: number): JobLog[] {
    return this.stmt("SELECT * FROM job_logs WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?").all(
      jobId,
      afterId,
      limit,
    ) as JobLog[];
  }

  /** Jobs waiting to run, oldest first. */
  queued(): Job[] {
    return this.stmt("SELECT * FROM jobs WHERE status = 'queued' ORDER BY id").all() as Job[];
  }

  /** Jobs of a type that are queued or running. */
  unfinished(type: string): Job[] {
    return this.stmt("SELECT * FROM jobs WHERE type = ? AND status IN ('queued','running')").all(
      type,
    ) as Job[];
  }

  create(type: string, params: unknown = {}, createdBy: number | null = null): Job {
    return this.insert({ type, params: JSON.stringify(params), created_by: createdBy });
  }

  log(jobId: number, level: JobLog["level"], message: string): void {
    this.db
      .prepare("INSERT INTO job_logs (job_id, at, level, message) VALUES (?, ?, ?, ?)")
      .run(jobId, nowIso(this.clock), level, message);
  }

  logs(jobId: number, afterId = 0): JobLog[] {
    return this.db
      .prepare("SELECT * FROM job_logs WHERE job_id = ? AND id > ? ORDER BY id")
      .all(jobId, afterId) as JobLog[];
  }

  /**
   * After a restart no job may stay `running`: the process that ran it is gone. Each
   * such job is marked failed with the reason, in one transaction. Returns their ids.
   */
  failInterrupted(reason: string): number[] {
    return this.db.transaction(() => {
      const ids = (
        this.stmt("SELECT id FROM jobs WHERE status = 'running'").all() as { id: number }[]
      ).map((r) => r.id);
      const now = nowIso(this.clock);
      for (const id of ids) {
        this.update(id, { status: "failed", error: reason, finished_at: now });
        this.log(id, "error", reason);
      }
      return ids;
    })();
  }
}
