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
