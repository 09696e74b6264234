import type { PowerAction } from "../../power/ipmi.js";
import { PowerError } from "../../power/ipmi.js";
import type { PowerService } from "../../power/service.js";
import { ApiError } from "../errors.js";
import { defineRoute, idParams, type Role, type RouteModule } from "../route.js";
import { visibleMachine } from "../routes/machines.js";

declare module "../route.js" {
  interface ApiServices {
    /** Power through the BMC (IPMI), or Wake-on-LAN for machines without one. */
    power?: PowerService;
  }
}

const ACTIONS: readonly PowerAction[] = ["on", "off", "cycle", "query"];
/** Viewers only read; a client may switch its own machines (the handler checks ownership). */
const POWER_ROLES: readonly Role[] = ["admin", "operator", "client"];

/**
 * /api/machines/{id}/power/{on|off|cycle|query}. One route per action, so history names
 * the action as the operation and the route table lists exactly what exists.
 */
export const powerRoutes: RouteModule = (deps) =>
  ACTIONS.map((action) =>
    defineRoute({
      method: "POST",
      path: `/machines/:id/power/${action}`,
      tag: "power",
      summary:
        action === "query"
          ? "Ask the machine's BMC for its power state (unknown without a BMC)"
          : `Power ${action} through the BMC${action === "on" ? ", or Wake-on-LAN without one" : ""}`,
      roles: POWER_ROLES,
      resource: "machine",
      operation: `power_${action}`,
      params: idParams,
      handler: async ({ params, user, audit }) => {
        const machine = visibleMachine(deps, user!, params.id);
        const power = deps.services.power;
        if (!power) {
          throw new ApiError(503, "service_unavailable", "power control is not available");
        }
        try {
          const r = await power.act(machine, action);
          audit({ machine_id: machine.id, detail: { method: r.method, state: r.state } });
          return {
            machine_id: machine.id,
            action,
            method: r.method,
            state: r.state,
            message:
              r.method === "wol"
                ? action === "on"
                  ? "Wake-on-LAN magic packet sent"
                  : "no BMC: the power state cannot be read"
                : `BMC accepted chassis power ${action === "query" ? "status" : action}`,
          };
        } catch (err) {
          if (!(err instanceof PowerError)) throw err;
          audit({ machine_id: machine.id, detail: { error: err.message } });
          // Asking a Wake-on-LAN-only machine to switch off is the request's fault; a BMC
          // that refuses or does not answer is an upstream failure.
          if (/needs a BMC|no user name or password/.test(err.message)) {
            throw new ApiError(409, "conflict_error", err.message);
          }
          throw new ApiError(502, "service_unavailable", err.message);
        }
      },
    }),
  );
