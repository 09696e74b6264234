import type { TargetIo } from "./types.js";

/**
 * Parses `tgtadm --op stat --mode target --tid N`: a header line, then one line per
 * logged-in session and LUN:
 *
 *   tgt lun sid rd_subm(bytes,cmds) rd_done(bytes,cmds) wr_subm(bytes,cmds) wr_done(bytes,cmds) errs
 *   1 1 3 4096 8 4096 8 0 0 0 0 0
 *
 * Counters are per session (a new login starts from zero); the completed reads and writes
 * of all sessions and LUNs are summed. Pairs printed as "4096,8" are read the same way.
 */
export function parseTgtStat(text: string): TargetIo {
  let readBytes = 0;
  let writeBytes = 0;
  let commands = 0;
  for (const line of text.split("\n")) {
    const n = line
      .trim()
      .split(/[\s,()]+/)
      .filter((x) => x !== "");
    if (n.length < 12 || !n.every((x) => /^\d+$/.test(x))) continue;
    const v = n.map(Number);
    readBytes += v[5]!;
    writeBytes += v[9]!;
    commands += v[6]! + v[10]!;
  }
  return { readBytes, writeBytes, commands };
}
