import * as z from "zod";
import { ALERT_SORTS, type AlertRow } from "../../store/alerts.js";
import { notFound } from "../conflict.js";
import {
  ANY_USER,
  type ApiDeps,
  type AuthUser,
  defineRoute,
  idParams,
  listQuery,
  OPERATORS,
  type RouteModule,
  sendList,
} from "../route.js";

function alertView(a: AlertRow) {
  let detail: unknown = {};
  try {
    detail = JSON.parse(a.detail);
  } catch {
    // a row written by hand: show it without detail rather than fail the list
  }
  return {
    id: a.id,
    cause: a.cause,
    severity: a.severity,
    machine_id: a.machine_id,
    machine_name: a.machine_name,
    message: a.message,
    detail,
    count: a.count,
    active: a.resolved_at === null,
    acknowledged: a.acknowledged_at !== null,
    created_at: a.created_at,
    last_seen_at: a.last_seen_at,
    resolved_at: a.resolved_at,
    acknowledged_at: a.acknowledged_at,
    acknowledged_by: a.acknowledged_by,
  };
}

const flag = z.enum(["true", "false"]).transform((v) => v === "true");

/** An alert a caller may see: a client only those of its own machines. */
function visibleAlert(deps: ApiDeps, user: AuthUser, id: number): AlertRow {
  const a = deps.store.alerts.getRow(id);
  if (
    !a ||
    (user.role === "client" &&
      (a.machine_id === null || deps.store.machines.ownerOf(a.machine_id) !== user.id))
  ) {
    throw notFound("alert", id);
  }
  return a;
}

/**
 * /api/alerts: what the fleet raised (stalls, target errors, overlay usage, disk reserve,
 * failed jobs), one active alert per cause per machine; acknowledging keeps it listed
 * until its cause goes away.
 */
export const alertsRoutes: RouteModule = (deps) => [
  defineRoute({
    method: "GET",
    path: "/alerts",
    tag: "alerts",
    summary: "List alerts (a client sees only its own machines')",
    roles: ANY_USER,
    query: listQuery(
      { sort: ALERT_SORTS, defaultOrder: "desc" },
      {
        active: flag.optional(),
        acknowledged: flag.optional(),
        severity: z.enum(["info", "warning", "critical"]).optional(),
        machine_id: z.coerce.number().int().positive().optional(),
      },
    ),
    handler: ({ c, query, user }) => {
      const { rows, total } = deps.store.alerts.listRows(query, {
        active: query.active,
        acknowledged: query.acknowledged,
        severity: query.severity,
        machine_id: query.machine_id,
        visibleTo: user!.role === "client" ? user!.id : undefined,
      });
      return sendList(c, rows.map(alertView), total, query);
    },
  }),
  defineRoute({
    method: "GET",
    path: "/alerts/:id",
    tag: "alerts",
    summary: "Get an alert",
    roles: ANY_USER,
    params: idParams,
    handler: ({ params, user }) => alertView(visibleAlert(deps, user!, params.id)),
  }),
  defineRoute({
    method: "POST",
    path: "/alerts/:id/acknowledge",
    tag: "alerts",
    summary: "Acknowledge an alert (someone is on it); it stays active until its cause is gone",
    roles: OPERATORS,
    resource: "alert",
    operation: "acknowledge",
    params: idParams,
    handler: ({ params, user, audit }) => {
      const a = visibleAlert(deps, user!, params.id);
      audit({ resource_id: a.id, machine_id: a.machine_id });
      if (a.acknowledged_at === null) deps.store.alerts.acknowledge(a.id, user!.id);
      return alertView(deps.store.alerts.getRow(a.id)!);
    },
  }),
];
