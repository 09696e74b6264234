import { z } from "zod";
import { SESSION_SORTS, type SessionRow } from "../../store/sessions.js";
import type { Target } from "../../store/targets.js";
import { notFound } from "../conflict.js";
import { ApiError } from "../errors.js";
import {
  type ApiDeps,
  defineRoute,
  listQuery,
  OPERATORS,
  READERS,
  type RouteModule,
  sendList,
} from "../route.js";
import { zLabel } from "../validate.js";

/** The GGnet `iscsi_info`: where the disk is and which image each LUN carries. */
export function iscsiInfo(t: Target | undefined) {
  if (!t) return null;
  const lun_mapping: Record<string, { image_id: number; mountpoint: string; type: string }> = {
    "0": { image_id: t.system_image_id, mountpoint: "C:", type: "system" },
  };
  if (t.extra_disk_image_id !== null) {
    lun_mapping["1"] = {
      image_id: t.extra_disk_image_id,
      mountpoint: t.extra_disk_mountpoint ?? "D:",
      type: t.target_type === "system_game" ? "game" : "data",
    };
  }
  return { portal: `${t.portal_ip}:${t.portal_port}`, iqn: t.iqn, lun_mapping };
}

function sessionView(deps: ApiDeps, s: SessionRow) {
  const start = Date.parse(s.started_at);
  const end = s.ended_at ? Date.parse(s.ended_at) : deps.clock();
  return {
    id: s.id,
    session_id: s.session_id,
    session_type: s.session_type,
    status: s.status,
    machine_id: s.machine_id,
    machine_name: s.machine_name,
    target_id: s.target_id,
    target_name: s.target_name,
    client_ip: s.client_ip,
    server_ip: s.server_ip,
    boot_method: s.boot_method,
    started_at: s.started_at,
    ended_at: s.ended_at,
    duration_seconds: Math.max(0, Math.round((end - start) / 1000)),
    phases: {
      dhcp_offer_at: s.dhcp_offer_at,
      tftp_done_at: s.tftp_done_at,
      script_served_at: s.script_served_at,
      iscsi_login_at: s.iscsi_login_at,
      iscsi_logout_at: s.iscsi_logout_at,
    },
    error: s.error,
    iscsi_info: iscsiInfo(s.target_id === null ? undefined : deps.store.targets.get(s.target_id)),
  };
}

const sessionParams = z.object({
  session_id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "a session id"),
});
const STATUSES = ["starting", "active", "stopping", "stopped", "error"] as const;

/** /api/sessions: boot sessions, with the GGnet start/status/stop actions. */
export const sessionsRoutes: RouteModule = (deps) => {
  const { store } = deps;
  const bySessionId = (sid: string) =>
    store.sessions.getRowBySessionId(sid) ?? raise(notFound("session", sid));
  return [
    defineRoute({
      method: "GET",
      path: "/sessions",
      tag: "sessions",
      summary: "List boot sessions",
      roles: READERS,
      query: listQuery(
        { sort: SESSION_SORTS, defaultOrder: "desc" },
        {
          status: z.enum(STATUSES).optional(),
          machine_id: z.coerce.number().int().positive().optional(),
          target_id: z.coerce.number().int().positive().optional(),
        },
      ),
      handler: ({ c, query }) => {
        const { rows, total } = store.sessions.listRows(query, {
          status: query.status,
          machine_id: query.machine_id,
          target_id: query.target_id,
        });
        return sendList(
          c,
          rows.map((r) => sessionView(deps, r)),
          total,
          query,
        );
      },
    }),
    defineRoute({
      method: "POST",
      path: "/sessions/start",
      tag: "sessions",
      summary: "Start a boot session on a target's machine",
      roles: OPERATORS,
      resource: "session",
      operation: "start",
      status: 201,
      body: z
        .object({
          target_id: z.number().int().positive(),
          session_type: zLabel(32)
            .regex(/^[a-z_]+$/, "lowercase letters and _")
            .default("diskless_boot"),
          boot_method: z.enum(["uefi", "bios", "pxe", "ipxe", "http"]).optional(),
          client_ip: z.ipv4().optional(),
        })
        .strict(),
      handler: ({ body, audit }) => {
        const target = store.targets.get(body.target_id);
        if (!target) {
          throw new ApiError(422, "validation_error", "target_id: no such target", {
            field: "target_id",
          });
        }
        const s = store.transaction(() => {
          const current = store.sessions.current(target.machine_id);
          if (current) {
            throw new ApiError(
              409,
              "conflict_error",
              `the machine already has session ${current.session_id}`,
              {
                session_id: current.session_id,
              },
            );
          }
          return store.sessions.start({
            machine_id: target.machine_id,
            target_id: target.id,
            session_type: body.session_type,
            boot_method: body.boot_method ?? null,
            client_ip: body.client_ip ?? null,
            server_ip: target.portal_ip,
          });
        });
        audit({ resource_id: s.session_id, machine_id: target.machine_id });
        return sessionView(deps, bySessionId(s.session_id));
      },
    }),
    defineRoute({
      method: "GET",
      path: "/sessions/:session_id/status",
      tag: "sessions",
      summary: "A session's status",
      roles: READERS,
      params: sessionParams,
      handler: ({ params }) => sessionView(deps, bySessionId(params.session_id)),
    }),
    defineRoute({
      method: "POST",
      path: "/sessions/:session_id/stop",
      tag: "sessions",
      summary: "Stop a running session",
      roles: OPERATORS,
      resource: "session",
      operation: "stop",
      params: sessionParams,
      handler: ({ params, audit }) => {
        const s = bySessionId(params.session_id);
        audit({ resource_id: s.session_id, machine_id: s.machine_id });
        if (s.status === "stopped" || s.status === "error") {
          throw new ApiError(409, "conflict_error", `session ${s.session_id} has already ended`);
        }
        store.sessions.end(s.id, "stopped");
        return sessionView(deps, bySessionId(s.session_id));
      },
    }),
  ];
};

function raise(err: Error): never {
  throw err;
}
