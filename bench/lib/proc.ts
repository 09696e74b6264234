// What the kernel says a process has used, from /proc/<pid>/stat: the benches report the
// CPU a server spent next to what it did.

import { readFileSync } from "node:fs";

/** Linux's USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s on every architecture. */
const TICKS_PER_SECOND = 100;

/**
 * CPU seconds (user + system, all threads) a process has used so far; with `reaped`, also
 * what its children that it has waited for used (cutime + cstime).
 */
export function processCpuSeconds(pid: number | string, reaped = false): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The command name (field 2) may hold spaces and parentheses: count from its last ")".
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  let ticks = Number(f[11]) + Number(f[12]);
  if (reaped) ticks += Number(f[13]) + Number(f[14]);
  return ticks / TICKS_PER_SECOND;
}
