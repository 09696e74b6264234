import type { Privileges } from "../host/privileges.js";
import type { Config } from "./config.js";
import { parseListen } from "./config.js";

export const UNPRIVILEGED_HTTP_PORT = 8080;
export const UNPRIVILEGED_TFTP_PORT = 6969;

/**
 * Without the right to bind low ports, HTTP and TFTP move to high ports and DHCP stays
 * off (it needs port 67 and raw sockets), so `npm start` works on a laptop. Returns the
 * adjusted configuration and a human sentence per change, for one log line.
 */
export function adjustForPrivileges(
  config: Config,
  privileges: Privileges,
): { config: Config; changes: string[] } {
  const c = structuredClone(config);
  const changes: string[] = [];
  if (!privileges.canBindLowPorts) {
    const { host, port } = parseListen(c.http.listen);
    if (port < 1024) {
      c.http.listen = `${host?.includes(":") ? `[${host}]` : (host ?? "")}:${UNPRIVILEGED_HTTP_PORT}`;
      changes.push(`HTTP moved from port ${port} to ${UNPRIVILEGED_HTTP_PORT}`);
    }
    if (c.tftp.enabled && c.tftp.port < 1024) {
      changes.push(`TFTP moved from port ${c.tftp.port} to ${UNPRIVILEGED_TFTP_PORT}`);
      c.tftp.port = UNPRIVILEGED_TFTP_PORT;
    }
  }
  if (c.dhcp.enabled && !(privileges.canBindLowPorts && privileges.canUseRawSockets)) {
    c.dhcp.enabled = false;
    changes.push("proxy-DHCP off (needs CAP_NET_BIND_SERVICE and CAP_NET_RAW)");
  }
  return { config: c, changes };
}
