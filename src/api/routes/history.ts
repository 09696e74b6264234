import * as z from "zod";
import { HISTORY_SORTS } from "../../store/history.js";
import { defineRoute, listQuery, READERS, type RouteModule, sendList } from "../route.js";

const isoTime = z.iso.datetime({ offset: true }).transform((s) => new Date(s).toISOString());

/** GET /api/history: who changed what, when, with what result (PMI's filters and shape). */
export const historyRoutes: RouteModule = (deps) => [
  defineRoute({
    method: "GET",
    path: "/history",
    tag: "history",
    summary:
      "Operation history with filters (resource type, operation, status, machine, user, time range)",
    roles: READERS,
    query: listQuery(
      { sort: HISTORY_SORTS, defaultOrder: "desc" },
      {
        offset: z.coerce.number().int().min(0).optional(),
        resource_type: z.string().max(64).optional(),
        operation: z.string().max(64).optional(),
        operation_type: z.string().max(64).optional(),
        status: z
          .enum(["success", "failure", "failed"])
          .transform((s) => (s === "failed" ? "failure" : s))
          .optional(),
        machine_id: z.coerce.number().int().positive().optional(),
        user_id: z.coerce.number().int().positive().optional(),
        username: z.string().max(64).optional(),
        since: isoTime.optional(),
        until: isoTime.optional(),
      },
    ),
    handler: ({ c, query }) => {
      const q = { ...query, skip: query.offset ?? query.skip };
      const operation = query.operation ?? query.operation_type;
      const { rows, total } = deps.store.history.listRows(q, {
        resource_type: query.resource_type,
        operation,
        status: query.status,
        machine_id: query.machine_id,
        user_id: query.user_id,
        username: query.username,
        since: query.since,
        until: query.until,
      });
      sendList(c, rows, total, q);
      return {
        operations: rows.map((r) => ({
          id: r.id,
          timestamp: r.at,
          request_id: r.request_id,
          resource_type: r.resource_type,
          resource_id: r.resource_id,
          operation: r.operation,
          status: r.status,
          duration_ms: r.duration_ms,
          duration: r.duration_ms === null ? null : r.duration_ms / 1000,
          machine_id: r.machine_id,
          user_id: r.user_id,
          user: r.username,
          details: JSON.parse(r.detail) as unknown,
        })),
        total,
        limit: q.limit,
        offset: q.skip,
        filters: {
          resource_type: query.resource_type ?? null,
          operation: operation ?? null,
          status: query.status ?? null,
          machine_id: query.machine_id ?? null,
          user_id: query.user_id ?? null,
          username: query.username ?? null,
          since: query.since ?? null,
          until: query.until ?? null,
        },
      };
    },
  }),
];
