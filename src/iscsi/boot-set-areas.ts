import type { ByteRange } from "./warm.js";

/**
 * The pure half of boot-set recording: how finely a device is counted, and what the
 * kernel's device-mapper statistics (`@stats_print`, Documentation/admin-guide/
 * device-mapper/statistics.rst) say was read, as the byte ranges of a boot set.
 */

const SECTOR = 512;
/** 64 KiB: fine enough that a boot set is not much more than what the boot read. */
const AREA_SECTORS = 128;
/** At most this many areas per recording, whatever the image's size and the memory. */
const MAX_AREAS = 65_536;
/**
 * The kernel keeps, per area, a shared record and one counter set per CPU: 65,536 areas
 * took 24 MiB on a 2-CPU guest (kernel 6.1, MemFree before and after), about 128 bytes
 * plus 128 per CPU. Bounded at 64 MiB: a 64-CPU server gets coarser areas, not 550 MiB.
 */
const MEMORY_BUDGET = 64 << 20;

/** One area's line of `@stats_print`: where it is and how many sectors were read in it. */
export interface StatsArea {
  startSector: number;
  sectors: number;
  readSectors: number;
}

/**
 * The area size, in sectors, of a recording of a device of `deviceBytes`: 64 KiB, or
 * bigger (a multiple of 64 KiB) when that would mean more areas than `maxAreas(cpus)`.
 */
export function areaSectorsFor(deviceBytes: number, cpus: number): number {
  const sectors = Math.ceil(deviceBytes / SECTOR);
  const areas = maxAreas(cpus);
  return Math.max(1, Math.ceil(sectors / areas / AREA_SECTORS)) * AREA_SECTORS;
}

/** How many areas fit the memory budget with this many CPUs (never more than 65,536). */
export function maxAreas(cpus: number): number {
  const perArea = 128 + 128 * Math.max(1, cpus);
  return Math.max(1, Math.min(MAX_AREAS, Math.floor(MEMORY_BUDGET / perArea)));
}

/**
 * Parses `@stats_print <region>`: one line per area, `<start>+<length>` then the counters
 * (reads completed, reads merged, sectors read, ...). Throws on a line of another shape:
 * a recording written from output misread would warm the wrong blocks forever.
 */
export function parseStatsPrint(text: string): StatsArea[] {
  const out: StatsArea[] = [];
  for (const [i, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (line === "") continue;
    const m = /^(\d+)\+(\d+)\s+\d+\s+\d+\s+(\d+)(\s+\d+)*$/.exec(line);
    if (!m)
      throw new Error(
        `@stats_print line ${i + 1} is not "<start>+<length> <counters>": ${line.slice(0, 80)}`,
      );
    out.push({ startSector: Number(m[1]), sectors: Number(m[2]), readSectors: Number(m[3]) });
  }
  return out;
}

/**
 * The areas something was read from, as byte ranges in device order, adjacent areas
 * merged into one range (the warmer reads them in one go either way; the file is shorter).
 * The kernel lists the last area at full size even past the device's end: cut there.
 */
export function readRanges(areas: readonly StatsArea[], deviceBytes: number): ByteRange[] {
  const out: ByteRange[] = [];
  const sorted = areas
    .filter((a) => a.readSectors > 0)
    .sort((a, b) => a.startSector - b.startSector);
  for (const a of sorted) {
    const offset = a.startSector * SECTOR;
    if (offset >= deviceBytes) continue;
    const length = Math.min(a.sectors * SECTOR, deviceBytes - offset);
    const last = out.at(-1);
    if (last && last.offset + last.length >= offset) {
      last.length = Math.max(last.length, offset + length - last.offset);
    } else {
      out.push({ offset, length });
    }
  }
  return out;
}

/** A boot set file's text: the header parseBootSet skips, then `offset,length` lines. */
export function formatBootSet(ranges: readonly ByteRange[]): string {
  return `offset,length\n${ranges.map((r) => `${r.offset},${r.length}\n`).join("")}`;
}
