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

/**
 * Whether a MAC is one of this host's own interfaces', read from the kernel at most every
 * `maxAgeMs`: often enough for a bridge, which takes a port's MAC as ports come and go;
 * seldom enough that a flood of DHCP packets does not turn into a flood of netlink dumps.
 */
export function ownMacs(
  maxAgeMs = 10_000,
  clock: () => number = Date.now,
): (mac: string) => boolean {
  let macs = new Set<string>();
  let readAt = Number.NEGATIVE_INFINITY;
  return (mac) => {
    const now = clock();
    if (now - readAt >= maxAgeMs) {
      macs = new Set(
        Object.values(networkInterfaces())
          .flat()
          .map((a) => a?.mac.toLowerCase())
          // Loopback and tunnels have no hardware address.
          .filter((m): m is string => m !== undefined && m !== "00:00:00:00:00:00"),
      );
      readAt = now;
    }
    return macs.has(mac.toLowerCase());
  };
}
