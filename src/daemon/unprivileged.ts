import type { Config, ConfigSource, LoadedConfig } from "../config/config.js";
import { ConfigError, envName, formatKey, parseListen } from "../config/config.js";
import type { Privileges } from "../host/privileges.js";

export const UNPRIVILEGED_HTTP_PORT = 8080;
export const UNPRIVILEGED_TFTP_PORT = 6969;

/**
 * Without the right to bind low ports, HTTP and TFTP defaults move to high ports and DHCP
 * stays off (it needs port 67 and raw sockets), so `npm start` works on a laptop. Only a
 * default moves: a port the admin chose (file or environment) is kept, and one below 1024
 * that this process cannot bind is a ConfigError naming the fix, because silently serving
 * elsewhere than asked is how two daemons end up fighting over 8080. Port 0 ("any free
 * port") needs no privilege and is never moved. Returns the adjusted configuration and a
 * human sentence per change, for one log line.
 */
export function adjustForPrivileges(
  loaded: Pick<LoadedConfig, "config" | "sources" | "file">,
  privileges: Privileges,
): { config: Config; changes: string[] } {
  const c = structuredClone(loaded.config);
  const changes: string[] = [];
  const needsPrivilege = (port: number) => port > 0 && port < 1024;
  if (!privileges.canBindLowPorts) {
    const { host, port } = parseListen(c.http.listen);
    if (needsPrivilege(port)) {
      refuseExplicit(loaded, ["http", "listen"], c.http.listen, port);
      c.http.listen = `${host?.includes(":") ? `[${host}]` : (host ?? "")}:${UNPRIVILEGED_HTTP_PORT}`;
      changes.push(`HTTP moved from port ${port} to ${UNPRIVILEGED_HTTP_PORT}`);
    }
    if (c.tftp.enabled && needsPrivilege(c.tftp.port)) {
      refuseExplicit(loaded, ["tftp", "port"], c.tftp.port, c.tftp.port);
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

/** Throws when the key was set by the admin; returns when it is a default (which may move). */
function refuseExplicit(
  loaded: Pick<LoadedConfig, "sources" | "file">,
  path: string[],
  value: unknown,
  port: number,
): void {
  const source: ConfigSource = loaded.sources[path.join(".")] ?? "default";
  if (source === "default") return;
  const where =
    source === "environment"
      ? `from environment ${envName(path)}`
      : `in ${loaded.file ?? "the configuration file"}`;
  throw new ConfigError(
    `${formatKey(path)} = ${JSON.stringify(value)} (${where}): port ${port} is below 1024 and this process may not bind it; ` +
      "run bootfleetd as root, grant it CAP_NET_BIND_SERVICE (systemd AmbientCapabilities=, or setcap cap_net_bind_service=+ep on node), " +
      "or choose a port >= 1024",
  );
}
