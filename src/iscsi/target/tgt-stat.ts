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
  const io = emptyIo();
  for (const v of statRows(text)) add(io, v);
  return io;
}

/**
 * Parses `tgtadm --op stat --mode system`: the same lines for every target, told apart by
 * their first column, the tid. One request for the whole fleet instead of one per target
 * (each of which also needed the target listing to find the tid). A target without a
 * logged-in session has no line, so no entry.
 */
export function parseTgtStatByTid(text: string): Map<number, TargetIo> {
  const byTid = new Map<number, TargetIo>();
  for (const v of statRows(text)) {
    const io = byTid.get(v[0]!) ?? emptyIo();
    byTid.set(v[0]!, io);
    add(io, v);
  }
  return byTid;
}

export function emptyIo(): TargetIo {
  return { readBytes: 0, writeBytes: 0, commands: 0 };
}

/** The numeric rows: tgt lun sid, then rd_subm, rd_done, wr_subm, wr_done as (bytes, cmds), errs. */
function* statRows(text: string): Generator<number[]> {
  for (const line of text.split("\n")) {
    const n = line
      .trim()
      .split(/[\s,()]+/)
      .filter((x) => x !== "");
    if (n.length < 12 || !n.every((x) => /^\d+$/.test(x))) continue;
    yield n.map(Number);
  }
}

function add(io: TargetIo, v: number[]): void {
  io.readBytes += v[5]!;
  io.writeBytes += v[9]!;
  io.commands += v[6]! + v[10]!;
}
