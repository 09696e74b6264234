import { netboots, planBoot } from "./boot-plan.js";
import type { ClientAddresses } from "./client-addresses.js";
import type { ClientPolicy, ProxyRequestInfo } from "./dhcp/server.js";
import type { Discovery } from "./discovery.js";
import type { BootTimeline } from "./timeline.js";

export interface DhcpPolicyDeps {
  addresses: ClientAddresses;
  discovery: Discovery;
  timeline: BootTimeline;
  /** The signed script URL for a client, on the server address it reached. */
  scriptUrl(serverAddress: string, mac: string): string;
  chainloadNicIpxe: boolean;
}

/**
 * What the proxy-DHCP tells each PXE client: the client's address is noted (the script
 * route serves only that address), the machine is recorded as seen, and its boot plan
 * decides whether it gets a boot file at all. A machine that boots locally gets none (PXE
 * firmware is told to boot locally, iPXE gets silence: see dhcp/proxy.ts), so the PC
 * moves on to its next boot device instead of loading iPXE to be told to exit.
 */
export function dhcpPolicy(deps: DhcpPolicyDeps): (req: ProxyRequestInfo) => ClientPolicy {
  return (req) => {
    const { client } = req;
    if (req.sourceAddress !== "0.0.0.0") deps.addresses.record(client.mac, req.sourceAddress);
    else if (client.ciaddr !== "0.0.0.0") deps.addresses.record(client.mac, client.ciaddr);
    const machine = deps.discovery.seen(client);
    return {
      noBootFile: !netboots(planBoot(machine)),
      scriptUrl: () => deps.scriptUrl(req.serverAddress, client.mac),
      chainload:
        deps.chainloadNicIpxe && client.isIpxe && !deps.timeline.chainloadedThisBoot(machine),
    };
  };
}
