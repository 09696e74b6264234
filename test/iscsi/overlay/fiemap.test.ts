import t from "tap";
import {
  FIEMAP_EXTENT_SHARED,
  parseXfsIoFiemap,
  splitXfsIoFiemapByFile,
  summarizeExtents,
  xfsIoFiemapArgs,
} from "../../../src/iscsi/overlay/fiemap.js";

// Recorded from xfs_io 6.1.0 on a loop XFS (reflink=1) after:
//   truncate -s 10G gold
//   dd if=/dev/urandom of=gold bs=1M count=4 seek=100  conv=notrunc   (4 MiB at 100 MiB)
//   dd if=/dev/urandom of=gold bs=1M count=2 seek=5000 conv=notrunc   (2 MiB at 5000 MiB)
//   cp --reflink=always gold ov1
//   dd if=/dev/urandom of=ov1 bs=64K count=3 seek=1605 conv=notrunc   (192 KiB at 1605*64 KiB)
//   xfs_io -r -c "fiemap -v" ov1
const RECORDED = `ov1:
 EXT: FILE-OFFSET          BLOCK-RANGE      TOTAL FLAGS
   0: [0..204799]:         hole             204800
   1: [204800..205439]:    192..831           640 0x2000
   2: [205440..205823]:    12608..12991       384   0x0
   3: [205824..212991]:    1216..8383        7168 0x2000
   4: [212992..10239999]:  hole             10027008
   5: [10240000..10244095]: 8384..12479       4096 0x2001
   6: [10244096..20971519]: hole             10727424
`;

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

t.test("parses a recorded xfs_io fiemap of a reflinked overlay", async (t) => {
  const extents = parseXfsIoFiemap(RECORDED);
  t.equal(extents.length, 7, "one entry per extent line; name and header lines ignored");
  const last = extents.at(-1)!;
  t.equal(last.offsetBytes + last.lengthBytes, 10 * GiB, "the map covers the whole 10 GiB file");
  const data = extents.filter((e) => e.flags !== undefined);
  t.equal(data[0]?.offsetBytes, 100 * MiB, "the first data extent starts where dd wrote it");
  const written = extents.find((e) => e.flags !== undefined && !(e.flags & FIEMAP_EXTENT_SHARED));
  t.same(
    written && { offset: written.offsetBytes, length: written.lengthBytes },
    { offset: 1605 * 64 * KiB, length: 192 * KiB },
    "the only private extent is the range the overlay rewrote",
  );

  const s = summarizeExtents(extents);
  t.equal(s.mappedBytes, 6 * MiB, "mapped = the 4 MiB + 2 MiB the image holds");
  t.equal(s.uniqueBytes, 192 * KiB, "unique = the 192 KiB the overlay wrote");
  t.equal(s.sharedBytes, 6 * MiB - 192 * KiB, "the rest is still shared with the image");
});

t.test("extents that are not shared count as unique whatever else they are", async (t) => {
  // 0x800 unwritten (preallocated), 0x4|0x1 delalloc + last, 0x2800 shared + unwritten.
  const out = [
    "f:",
    " EXT: FILE-OFFSET      BLOCK-RANGE      TOTAL FLAGS",
    "   0: [0..7]:          100..107             8 0x800",
    "   1: [8..15]:         200..207             8 0x2800",
    "   2: [16..31]:        300..315            16 0x5",
  ].join("\n");
  const s = summarizeExtents(parseXfsIoFiemap(out));
  t.same(s, { mappedBytes: 32 * 512, sharedBytes: 8 * 512, uniqueBytes: 24 * 512 });
});

t.test("empty output (an empty file) maps nothing", async (t) => {
  t.same(summarizeExtents(parseXfsIoFiemap("f:\n")), {
    mappedBytes: 0,
    sharedBytes: 0,
    uniqueBytes: 0,
  });
});

t.test("xfs_io is asked to flush before mapping, read-only, as argv", async (t) => {
  const args = xfsIoFiemapArgs("/srv/ov/pc 1.img");
  t.same(args, ["-r", "-c", "fsync", "-c", "fiemap -v", "/srv/ov/pc 1.img"]);
});

t.test("one xfs_io run over several files is cut per file at each file's header", async (t) => {
  t.same(xfsIoFiemapArgs("/o/a.img", "/o/b.img").slice(-2), ["/o/a.img", "/o/b.img"]);
  // Shaped like xfs_io 6.1.0's output for two files; b.img's map is empty (an empty file).
  const output = `/o/a.img:
 EXT: FILE-OFFSET      BLOCK-RANGE        TOTAL FLAGS
   0: [0..23]:         50689256..50689279    24   0x1
/o/b.img:
/o/c.img:
 EXT: FILE-OFFSET      BLOCK-RANGE        TOTAL FLAGS
   0: [0..39]:         hole                  40
   1: [40..47]:        55842856..55842863     8 0x2001
`;
  const maps = splitXfsIoFiemapByFile(output, ["/o/a.img", "/o/b.img", "/o/c.img", "/o/d.img"]);
  t.same([...maps.keys()], ["/o/a.img", "/o/b.img", "/o/c.img"], "d.img, absent, has no entry");
  t.same(summarizeExtents(parseXfsIoFiemap(maps.get("/o/a.img")!)).uniqueBytes, 24 * 512);
  t.same(parseXfsIoFiemap(maps.get("/o/b.img")!), [], "b.img maps nothing");
  t.same(summarizeExtents(parseXfsIoFiemap(maps.get("/o/c.img")!)), {
    mappedBytes: 8 * 512,
    sharedBytes: 8 * 512,
    uniqueBytes: 0,
  });
});
