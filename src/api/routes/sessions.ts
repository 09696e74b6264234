import * as z from "zod";
import { errorText } from "../../lib/error-text.js";
import { PowerError } from "../../power/ipmi.js";
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
      iscsi_relogin_at: s.iscsi_relogin_at,
    },
    iscsi_logins: s.iscsi_logins,
    error: s.error,
    io_seen_at: s.io_seen_at,
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
      handler: async ({ body, audit }) => {
        const target = store.targets.get(body.target_id);
        if (!target) {
          throw new ApiError(422, "validation_error", "target_id: no such target", {
            field: "target_id",
          });
        }
        const power = deps.services.power;
        if (!power) {
          throw new ApiError(
            503,
            "service_unavailable",
            "power control is not available: the machine cannot be woken",
          );
        }
        const machine = store.machines.get(target.machine_id)!;
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
        // The session is "starting" (state waking) until the PC's own PXE request stamps
        // it: the boot's DHCP offer, TFTP, script and iSCSI login land on this session.
        try {
          const r = await power.act(machine, "on");
          deps.services.fleet?.evaluate();
          return {
            ...sessionView(deps, bySessionId(s.session_id)),
            power: { method: r.method, state: r.state },
            message:
              r.method === "wol"
                ? "Wake-on-LAN magic packet sent: the session follows the boot's phases"
                : "BMC accepted power on: the session follows the boot's phases",
          };
        } catch (err) {
          const reason = `power on failed: ${errorText(err)}`;
          store.sessions.end(s.id, "error", reason);
          deps.services.fleet?.evaluate();
          if (!(err instanceof PowerError)) throw err;
          throw new ApiError(502, "service_unavailable", reason, { session_id: s.session_id });
        }
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
      handler: async ({ params, user, audit }) => {
        const s = bySessionId(params.session_id);
        audit({ resource_id: s.session_id, machine_id: s.machine_id });
        if (s.status === "stopped" || s.status === "error") {
          throw new ApiError(409, "conflict_error", `session ${s.session_id} has already ended`);
        }
        const machine = store.machines.get(s.machine_id)!;
        const seenBooting =
          s.dhcp_offer_at || s.tftp_done_at || s.script_served_at || s.iscsi_login_at;
        let how: string;
        if (machine.bmc_address) {
          const power = deps.services.power;
          if (!power) {
            throw new ApiError(503, "service_unavailable", "power control is not available");
          }
          try {
            await power.act(machine, "off");
          } catch (err) {
            if (!(err instanceof PowerError)) throw err;
            // Not switched off: the session goes on, and says so.
            throw new ApiError(
              /no user name or password/.test(err.message) ? 409 : 502,
              /no user name or password/.test(err.message)
                ? "conflict_error"
                : "service_unavailable",
              `${machine.name} was not switched off, the session continues: ${err.message}`,
            );
          }
          how = "powered off through its BMC";
        } else if (!seenBooting) {
          how = "nothing of its boot was seen (never reached PXE)";
        } else {
          throw new ApiError(
            409,
            "conflict_error",
            `${machine.name} has no BMC: bootfleet cannot switch it off or ask it to shut down (a diskless PC runs no agent). Shut it down from its OS; the session ends when its initiator logs out.`,
          );
        }
        store.sessions.end(s.id, "stopped");
        deps.log.info(
          { session_id: s.session_id, machine_id: s.machine_id, by: user!.username, how },
          "session stopped",
        );
        deps.services.fleet?.evaluate();
        return {
          ...sessionView(deps, bySessionId(s.session_id)),
          message: `session ended: ${how}`,
        };
      },
    }),
  ];
};

function raise(err: Error): never {
  throw err;
}
