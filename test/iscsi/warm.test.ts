import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pino } from "pino";
import t from "tap";
import {
  BootSetWarmer,
  bootSetPathOf,
  coalesce,
  parseBootSet,
  warmFile,
} from "../../src/iscsi/warm.js";

const logger = pino({ level: "silent" });

t.test("a recorded boot set: parsed, then sorted and merged into few reads", async (t) => {
  const set = parseBootSet("offset,length\n32768,2048\n0,512\n0,512\n\n1048576,512\n");
  t.same(set, [
    { offset: 32768, length: 2048 },
    { offset: 0, length: 512 },
    { offset: 0, length: 512 },
    { offset: 1048576, length: 512 },
  ]);
  t.same(coalesce(set, 0), [
    { offset: 0, length: 512 },
    { offset: 32768, length: 2048 },
    { offset: 1048576, length: 512 },
  ]);
  t.same(coalesce(set, 64 * 1024), [
    { offset: 0, length: 34816 },
    { offset: 1048576, length: 512 },
  ]);
  t.throws(() => parseBootSet("offset,length\n12;4\n"), /line 2 is not "offset,length"/);
});

t.test("warming reads the set's bytes, and no more than its bound", async (t) => {
  const dir = t.testdir({});
  const image = join(dir, "v1.raw");
  await writeFile(image, Buffer.alloc(4 << 20, 1));
  const ranges = [
    { offset: 0, length: 1 << 20 },
    { offset: 3 << 20, length: 1 << 20 },
  ];
  t.equal(await warmFile(image, ranges, { maxBytes: 8 << 20, chunkBytes: 256 << 10 }), 2 << 20);
  t.equal(await warmFile(image, ranges, { maxBytes: 1.5 * (1 << 20) }), 1.5 * (1 << 20));
  const cases: [string, { offset: number; length: number }[], number][] = [
    [
      "ranges sharing a page are read once, as one: 0-1100, and 8192-8292 on its own",
      [
        { offset: 8192, length: 100 },
        { offset: 0, length: 100 },
        { offset: 50, length: 150 },
        { offset: 1000, length: 100 },
      ],
      1100 + 100,
    ],
    [
      "the page between two ranges is not read",
      [
        { offset: 0, length: 4096 },
        { offset: 8192, length: 100 },
      ],
      4096 + 100,
    ],
    ["cut at the end of the file", [{ offset: (4 << 20) - 100, length: 8192 }], 100],
    ["past the end: nothing", [{ offset: 4 << 20, length: 4096 }], 0],
  ];
  for (const [what, set, bytes] of cases) {
    t.equal(await warmFile(image, set, { maxBytes: 1 << 20 }), bytes, what);
  }
});

t.test("the warmer reads a version's recorded set, and skips one without", async (t) => {
  const dir = t.testdir({});
  const image = join(dir, "v2.raw");
  await writeFile(image, Buffer.alloc(1 << 20, 2));
  await writeFile(bootSetPathOf(image), "offset,length\n0,65536\n524288,4096\n");
  const w = new BootSetWarmer({ maxBytes: 1 << 30, log: logger });
  t.equal(await w.warm(image), 65536 + 4096);
  t.equal(await w.warm(join(dir, "unrecorded.raw")), 0);
  const off = new BootSetWarmer({ maxBytes: 0, log: logger });
  t.equal(await off.warm(image), 0, "a bound of 0 turns warming off");
});
