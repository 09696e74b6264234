import type { MacForIp } from "../host/neighbours.js";
import type { Machine } from "../store/machines.js";

/**
 * Whether the host fetching a machine's script over HTTP is that machine, as far as the
 * server can know on its own. Nothing here comes from what a packet claims:
 * - on the boot LAN, the kernel's neighbour table gives the MAC behind the connection's
 *   peer address (the TCP handshake has just resolved it), and it must be the MAC in the
 *   script's path;
 * - behind a router there is no such entry (the packets come from the router's MAC), so a
 *   routed peer is accepted only from a subnet the admin allowed for routed boot AND at
 *   the fixed address the admin gave the machine (its ip_address).
 * What it cannot see: a host on the LAN that answers ARP for another machine's address
 * with that machine's MAC (ARP spoofing). Only the switch can stop that (SECURITY.md).
 */
export interface PeerBindingDeps {
  macForIp: MacForIp;
  /** Subnets allowed to boot through a router, e.g. 10.20.0.0/24. */
  routedSubnets: readonly Ipv4Subnet[];
}

export type PeerVerdict = { ok: true; via: "link" | "routed" } | { ok: false; reason: string };

export async function checkPeer(
  deps: PeerBindingDeps,
  mac: string,
  ip: string,
  machine: Machine | undefined,
): Promise<PeerVerdict> {
  const seen = await deps.macForIp(ip);
  if (seen !== undefined) {
    return seen === mac
      ? { ok: true, via: "link" }
      : { ok: false, reason: `the peer ${ip} is ${seen}, not the machine` };
  }
  const subnet = deps.routedSubnets.find((s) => s.contains(ip));
  if (!subnet) {
    return {
      ok: false,
      reason: `no neighbour entry for ${ip}, and its subnet is not allowed routed boot`,
    };
  }
  if (!machine?.ip_address) {
    return {
      ok: false,
      reason: `routed boot from ${subnet.text} needs the machine's fixed address`,
    };
  }
  if (machine.ip_address !== ip) {
    return { ok: false, reason: `routed peer ${ip} is not the machine's fixed address` };
  }
  return { ok: true, via: "routed" };
}

export interface Ipv4Subnet {
  readonly text: string;
  contains(ip: string): boolean;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

function ipv4ToInt(ip: string): number | undefined {
  if (!IPV4.test(ip)) return undefined;
  return ip.split(".").reduce((n, octet) => n * 256 + Number(octet), 0);
}

/** "10.20.0.0/24" as a subnet; throws naming the value when it is not one. */
export function parseSubnet(cidr: string): Ipv4Subnet {
  const [address = "", bits = "", extra] = cidr.split("/");
  const base = ipv4ToInt(address);
  const prefix = /^\d{1,2}$/.test(bits) ? Number(bits) : -1;
  if (base === undefined || prefix < 0 || prefix > 32 || extra !== undefined) {
    throw new Error(`${JSON.stringify(cidr)} is not an IPv4 subnet such as "10.20.0.0/24"`);
  }
  const size = 2 ** (32 - prefix);
  const network = base - (base % size);
  if (network !== base) {
    throw new Error(
      `${JSON.stringify(cidr)} has host bits set (the subnet is ${intToIpv4(network)}/${prefix})`,
    );
  }
  return {
    text: cidr,
    contains: (ip) => {
      const n = ipv4ToInt(ip);
      return n !== undefined && n - (n % size) === network;
    },
  };
}

function intToIpv4(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join(".");
}
