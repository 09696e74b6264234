import { readFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import {
  areaSectorsFor,
  formatBootSet,
  maxAreas,
  parseStatsPrint,
  readRanges,
} from "../../src/iscsi/boot-set-areas.js";
import { parseBootSet } from "../../src/iscsi/warm.js";

// Captured from the Debian guest (kernel 6.1): `dmsetup message <dev> 0 "@stats_print <id>"`
// of a 64 MiB device (131072 sectors), after O_DIRECT reads of 4 KiB at 64 KiB, 192 KiB at
// 6.25 MiB and the last sector.
const fixture = (name: string) =>
  readFileSync(join(import.meta.dirname, "../fixtures/dm-stats", name), "utf8");

t.test("@stats_print as the kernel prints it: area, length, sectors read", async (t) => {
  // Created "/10": ten areas of 13108 sectors, the last one listed past the device's end.
  const areas = parseStatsPrint(fixture("print-10-areas-64mib.txt"));
  t.equal(areas.length, 10);
  t.same(areas[0], { startSector: 0, sectors: 13108, readSectors: 316 });
  t.same(areas[1], { startSector: 13108, sectors: 13108, readSectors: 76 });
  t.same(areas[9], { startSector: 117972, sectors: 13108, readSectors: 1 });
  t.equal(areas.filter((a) => a.readSectors === 0).length, 7);
  t.same(
    readRanges(areas, 64 << 20),
    [
      { offset: 0, length: 2 * 13108 * 512 },
      // Cut at the device's end (131072 sectors), not at 117972 + 13108.
      { offset: 117972 * 512, length: (131072 - 117972) * 512 },
    ],
    "read areas as byte ranges: adjacent ones merged, the last one cut at the device's end",
  );
});

t.test("the 64 KiB areas a boot read: the ranges the warmer will read", async (t) => {
  // The 1024 areas of 128 sectors of the guest test's recording (test/guest/boot-set-record).
  const areas = parseStatsPrint(fixture("print-64k-areas-64mib.txt"));
  t.equal(areas.length, 1024);
  const ranges = readRanges(areas, 64 << 20);
  t.same(ranges, [
    { offset: 0, length: 65536 },
    { offset: 1 << 20, length: 131072 },
    { offset: 8 << 20, length: 327680 },
    { offset: (64 << 20) - 65536, length: 65536 },
  ]);
  t.same(parseBootSet(formatBootSet(ranges)), ranges, "written as parseBootSet reads it");
});

t.test("output of another shape is refused, not half-read", async (t) => {
  t.throws(
    () => parseStatsPrint("0+128 1 0 8 0 0 0 0 0 0 0 0 0 0\nDevice does not exist\n"),
    /line 2 is not "<start>\+<length> <counters>"/,
  );
  t.same(parseStatsPrint("\n"), [], "an empty region (nothing to print) is no area");
});

t.test("areas unread, out of order, or past the end", async (t) => {
  const a = (startSector: number, readSectors: number, sectors = 128) => ({
    startSector,
    sectors,
    readSectors,
  });
  t.same(readRanges([a(256, 0), a(0, 0)], 1 << 20), [], "nothing read: no range");
  t.same(
    readRanges([a(384, 1), a(0, 8), a(128, 8), a(1024, 1)], 1024 * 512),
    [
      { offset: 0, length: 256 * 512 },
      { offset: 384 * 512, length: 128 * 512 },
    ],
    "sorted, adjacent merged, a gap kept; an area starting at the end is dropped",
  );
});

t.test("area size: 64 KiB, bigger only past the area bound", async (t) => {
  t.equal(areaSectorsFor(64 << 20, 2), 128, "64 MiB: 64 KiB areas");
  t.equal(areaSectorsFor(4 * 2 ** 30, 2), 128, "4 GiB: still 65,536 areas of 64 KiB");
  t.equal(areaSectorsFor(4 * 2 ** 30 + 512, 2), 256, "a sector more: 128 KiB areas");
  t.equal(areaSectorsFor(40 * 2 ** 30, 2), 1280, "40 GiB: 640 KiB areas, 65,536 of them");
  t.equal(maxAreas(2), 65_536);
  // The kernel's counters are per CPU: a big server gets fewer, bigger areas.
  t.equal(maxAreas(64), Math.floor((64 << 20) / (128 + 128 * 64)));
  const sectors = (40 * 2 ** 30) / 512;
  const step = areaSectorsFor(40 * 2 ** 30, 64);
  t.equal(step % 128, 0, "a multiple of 64 KiB");
  t.ok(Math.ceil(sectors / step) <= maxAreas(64), "within the bound");
});
