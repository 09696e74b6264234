import { readFileSync } from "node:fs";

/** Linux capability bits we care about (include/uapi/linux/capability.h). */
const CAP_NET_BIND_SERVICE = 10n;
const CAP_NET_RAW = 13n;

export interface Privileges {
  /** The process runs as uid 0. Decides root-style defaults such as /var/lib/bootfleet. */
  isRoot: boolean;
  /** May bind ports below 1024 (HTTP 80, TFTP 69, DHCP 67). */
  canBindLowPorts: boolean;
  /** May open raw sockets and bind them to a device (proxy-DHCP needs it). */
  canUseRawSockets: boolean;
}

/**
 * What this process may do, read from its effective capability set rather than from
 * the uid alone: under systemd the daemon may run as a service user that was given
 * CAP_NET_BIND_SERVICE and CAP_NET_RAW, and must then behave like root for ports.
 */
export function detectPrivileges(statusText?: string): Privileges {
  const isRoot = process.getuid?.() === 0;
  let capEff = isRoot ? ~0n : 0n;
  try {
    const text = statusText ?? readFileSync("/proc/self/status", "utf8");
    const line = text.split("\n").find((l) => l.startsWith("CapEff:"));
    if (line) capEff = BigInt(`0x${line.slice("CapEff:".length).trim()}`);
  } catch {
    // No /proc (not Linux, or hidden): fall back to the uid.
  }
  const has = (bit: bigint) => (capEff & (1n << bit)) !== 0n;
  return {
    isRoot,
    canBindLowPorts: has(CAP_NET_BIND_SERVICE),
    canUseRawSockets: has(CAP_NET_RAW),
  };
}
