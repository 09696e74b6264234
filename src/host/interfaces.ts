import { readFileSync } from "node:fs";
import { networkInterfaces } from "node:os";

/**
 * The interface that carries the IPv4 default route, from /proc/net/route (the
 * destination column is 00000000 for the default route). Undefined when there is none,
 * as in a fresh network namespace.
 */
export function defaultRouteInterface(routeTable?: string): string | undefined {
  let text: string;
  try {
    text = routeTable ?? readFileSync("/proc/net/route", "utf8");
  } catch {
    return undefined;
  }
  for (const line of text.split("\n").slice(1)) {
    const [iface, destination, , , , , , mask] = line.trim().split(/\s+/);
    if (iface && destination === "00000000" && mask === "00000000") return iface;
  }
  return undefined;
}

/** The first IPv4 address of an interface, or undefined when it has none. */
export function interfaceIPv4(name: string): string | undefined {
  return networkInterfaces()[name]?.find((a) => a.family === "IPv4" && !a.internal)?.address;
}

/** The MACs of this host's interfaces, lower case, without the all-zero one. */
function readOwnMacs(): Set<string> {
  return new Set(
    Object.values(networkInterfaces())
      .flat()
      .map((a) => a?.mac.toLowerCase())
      // Loopback and tunnels have no hardware address.
      .filter((m): m is string => m !== undefined && m !== "00:00:00:00:00:00"),
  );
}

/**
 * Whether a MAC is one of this host's own interfaces'. The kernel's list is kept for
 * `maxAgeMs`, and read again early on a miss, at most every `missRereadMs`: a bridge takes
 * a port's MAC as ports come and go, and a MAC that became ours a moment ago must be
 * recognised now, not ten seconds later; yet a flood of DHCP packets from foreign MACs (all
 * misses) costs at most one netlink dump a second.
 */
export function ownMacs(
  opts: {
    maxAgeMs?: number;
    missRereadMs?: number;
    clock?: () => number;
    read?: () => Set<string>;
  } = {},
): (mac: string) => boolean {
  const maxAgeMs = opts.maxAgeMs ?? 10_000;
  const missRereadMs = opts.missRereadMs ?? 1_000;
  const clock = opts.clock ?? Date.now;
  const read = opts.read ?? readOwnMacs;
  let macs = new Set<string>();
  let readAt = Number.NEGATIVE_INFINITY;
  return (mac) => {
    const key = mac.toLowerCase();
    const now = clock();
    const age = now - readAt;
    if (age >= maxAgeMs || (age >= missRereadMs && !macs.has(key))) {
      macs = read();
      readAt = now;
    }
    return macs.has(key);
  };
}
