import * as z from "zod";
import { type JobRunner, parseSteps } from "../../jobs/runner.js";
import { JOB_SORTS, type JobRow } from "../../store/jobs.js";
import { notFound } from "../conflict.js";
import { ApiError } from "../errors.js";
import {
  defineRoute,
  idParams,
  listQuery,
  OPERATORS,
  READERS,
  type RouteModule,
  sendList,
} from "../route.js";

declare module "../route.js" {
  interface ApiServices {
    /** Long work (image imports, storage cleanup) as rows of the jobs table. */
    jobs?: JobRunner;
  }
}

const JOB_STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"] as const;
function parseJson(text: string | null): unknown {
  if (text === null) return null;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

/** A job with its steps, parameters and result as JSON, and where its log is. */
export function jobView(j: JobRow) {
  return {
    id: j.id,
    type: j.type,
    status: j.status,
    progress: j.progress,
    steps: parseSteps(j.steps),
    params: parseJson(j.params),
    result: parseJson(j.result),
    error: j.error,
    created_by: j.created_by,
    created_by_username: j.created_by_username,
    created_at: j.created_at,
    started_at: j.started_at,
    finished_at: j.finished_at,
    updated_at: j.updated_at,
    log_url: `/api/jobs/${j.id}/logs`,
  };
}

/** /api/jobs: status, progress, steps and logs of long work; cancel. */
export const jobsRoutes: RouteModule = (deps) => {
  const { store } = deps;
  const row = (id: number) => store.jobs.getRow(id) ?? raise(notFound("job", id));
  return [
    defineRoute({
      method: "GET",
      path: "/jobs",
      tag: "jobs",
      summary: "List jobs (newest first by default)",
      roles: READERS,
      query: listQuery(
        { sort: JOB_SORTS, defaultSort: "id", defaultOrder: "desc" },
        {
          status: z.enum(JOB_STATUSES).optional(),
          type: z
            .string()
            .regex(/^[a-z_]{1,64}$/, "a job type such as image_import")
            .optional(),
        },
      ),
      handler: ({ c, query }) => {
        const { rows, total } = store.jobs.listRows(query, {
          status: query.status,
          type: query.type,
        });
        return sendList(c, rows.map(jobView), total, query);
      },
    }),
    defineRoute({
      method: "GET",
      path: "/jobs/:id",
      tag: "jobs",
      summary: "Get a job: status, progress, steps, result",
      roles: READERS,
      params: idParams,
      handler: ({ params }) => jobView(row(params.id)),
    }),
    defineRoute({
      method: "GET",
      path: "/jobs/:id/logs",
      tag: "jobs",
      summary: "A job's log lines (after=<id> for the lines after those already read)",
      roles: READERS,
      params: idParams,
      query: z.object({
        after: z.coerce.number().int().min(0).default(0),
        limit: z.coerce.number().int().min(1).max(5000).default(1000),
      }),
      handler: ({ params, query }) => {
        const job = row(params.id);
        const lines = store.jobs.logPage(job.id, query.after, query.limit);
        return {
          job_id: job.id,
          status: job.status,
          logs: lines.map((l) => ({
            id: l.id,
            timestamp: l.at,
            level: l.level,
            message: l.message,
          })),
          next_after: lines.at(-1)?.id ?? query.after,
        };
      },
    }),
    defineRoute({
      method: "POST",
      path: "/jobs/:id/cancel",
      tag: "jobs",
      summary: "Cancel a queued or running job (an operator only the jobs it started)",
      roles: OPERATORS,
      resource: "job",
      operation: "cancel",
      status: 202,
      params: idParams,
      handler: ({ params, user }) => {
        const runner = deps.services.jobs;
        if (!runner)
          throw new ApiError(503, "service_unavailable", "the job runner is not running");
        const job = row(params.id);
        if (user!.role !== "admin" && job.created_by !== user!.id) {
          throw new ApiError(
            403,
            "authorization_error",
            "an operator may cancel only the jobs it started",
          );
        }
        const outcome = runner.cancel(job.id);
        if (outcome === "not_found") throw notFound("job", job.id);
        if (outcome === "finished") {
          throw new ApiError(409, "conflict_error", `job ${job.id} has already finished`, {
            status: job.status,
          });
        }
        return { outcome, job: jobView(row(job.id)) };
      },
    }),
  ];
};

function raise(err: Error): never {
  throw err;
}
