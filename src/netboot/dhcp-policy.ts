import { netboots, planBoot } from "./boot-plan.js";
import type { ClientPolicy, ProxyRequestInfo } from "./dhcp/server.js";
import type { Discovery } from "./discovery.js";
import type { BootTimeline } from "./timeline.js";

export interface DhcpPolicyDeps {
  discovery: Discovery;
  timeline: BootTimeline;
  /** The signed script URL for a client, on the server address it reached. */
  scriptUrl(serverAddress: string, mac: string): string;
  chainloadNicIpxe: boolean;
}

/**
 * What the proxy-DHCP tells each PXE client: the machine is recorded as seen, and its boot
 * plan decides whether it gets a boot file at all. Nothing is learned about the client's
 * address here: ciaddr and the source of a 4011 request are whatever the sender wrote, so
 * the script route asks the kernel who it talks to instead (peer-binding.ts). Nothing
 * here touches a machine's disk or secrets either: a DHCP packet only names a MAC. A machine that boots locally gets none (PXE
 * firmware is told to boot locally, iPXE gets silence: see dhcp/proxy.ts), so the PC
 * moves on to its next boot device instead of loading iPXE to be told to exit.
 */
export function dhcpPolicy(deps: DhcpPolicyDeps): (req: ProxyRequestInfo) => ClientPolicy {
  return (req) => {
    const { client } = req;
    const machine = deps.discovery.seen(client);
    return {
      noBootFile: !netboots(planBoot(machine)),
      scriptUrl: () => deps.scriptUrl(req.serverAddress, client.mac),
      chainload:
        deps.chainloadNicIpxe && client.isIpxe && !deps.timeline.chainloadedThisBoot(machine),
      // The machine read above, not a second look-up by MAC per reply.
      replied: (kind) => deps.timeline.replied(machine, req, kind),
    };
  };
}
