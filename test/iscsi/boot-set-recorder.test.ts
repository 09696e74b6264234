import { existsSync } from "node:fs";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pino } from "pino";
import t, { type Test } from "tap";
import {
  BOOT_SET_PROGRAM_ID,
  BootSetRecorder,
  type ReadStats,
} from "../../src/iscsi/boot-set-recorder.js";

// The recorder's decisions over a stand-in for device-mapper statistics; the real kernel's
// side is proven in the Debian guest (test/guest/boot-set-record.test.ts).

const logger = pino({ level: "silent" });
const MIB = 1 << 20;

/** Regions per device; `read` marks areas (of 128 sectors) read, as a boot would. */
class FakeStats implements ReadStats {
  readonly regions = new Map<
    string,
    Map<number, { step: number; prog: string; read: Set<number> }>
  >();
  readonly calls: string[] = [];
  failCreate = false;
  #next = 0;
  async statsCreate(device: string, areaSectors: number, programId: string): Promise<number> {
    this.calls.push(`create ${device} ${areaSectors} ${programId}`);
    if (this.failCreate) throw new Error("message ioctl on x failed: Invalid argument");
    const id = this.#next++;
    const m = this.regions.get(device) ?? new Map();
    m.set(id, { step: areaSectors, prog: programId, read: new Set() });
    this.regions.set(device, m);
    return id;
  }
  async statsPrint(device: string, region: number): Promise<string> {
    const r = this.regions.get(device)?.get(region);
    if (!r) throw new Error("No such file or directory");
    const lines: string[] = [];
    for (let start = 0; start < (8 * MIB) / 512; start += r.step) {
      const read = r.read.has(start) ? r.step : 0;
      lines.push(`${start}+${r.step} ${read ? 1 : 0} 0 ${read} 0 0 0 0 0 0 0 0 0 0`);
    }
    return `${lines.join("\n")}\n`;
  }
  async statsDelete(device: string, region: number): Promise<void> {
    this.calls.push(`delete ${device} ${region}`);
    if (!this.regions.get(device)?.delete(region)) throw new Error("No such file or directory");
  }
  async statsList(device: string, programId: string): Promise<number[]> {
    return [...(this.regions.get(device) ?? new Map())]
      .filter(([, r]) => r.prog === programId)
      .map(([id]) => id);
  }
  /** A read of the area at `sector` on every region of the device. */
  read(device: string, sector: number): void {
    for (const r of this.regions.get(device)?.values() ?? []) r.read.add(sector);
  }
  open(device: string): number {
    return this.regions.get(device)?.size ?? 0;
  }
}

function setup(t: Test, windowMs = 600_000) {
  const dir = t.testdir({});
  const stats = new FakeStats();
  const rec = new BootSetRecorder({ stats, windowMs, log: logger, cpus: 2 });
  t.teardown(() => rec.close());
  return { stats, rec, image: join(dir, "v1.raw"), dir };
}

t.test(
  "the first boot of a version records; its device going ends it with what was read",
  async (t) => {
    const { stats, rec, image } = setup(t);
    t.equal(await rec.start(image, "bfsnap-a", 8 * MIB), true);
    t.same(stats.calls, [`create bfsnap-a 128 ${BOOT_SET_PROGRAM_ID}`], "64 KiB areas, our tag");
    t.equal(await rec.start(image, "bfsnap-b", 8 * MIB), false, "one recording per version");
    stats.read("bfsnap-a", 0);
    stats.read("bfsnap-a", 128);
    stats.read("bfsnap-a", 1024);
    await rec.deviceGoing("bfsnap-a");
    t.equal(
      await readFile(`${image}.bootset.csv`, "utf8"),
      "offset,length\n0,131072\n524288,65536\n",
    );
    t.equal(stats.open("bfsnap-a"), 0, "its region deleted");
    t.equal(await rec.start(image, "bfsnap-b", 8 * MIB), false, "recorded once: not again");
  },
);

t.test("the window's end writes the file", async (t) => {
  const { stats, rec, image } = setup(t, 20);
  t.equal(await rec.start(image, "bfsnap-a", 8 * MIB), true);
  stats.read("bfsnap-a", 256);
  while (!existsSync(`${image}.bootset.csv`)) await new Promise((r) => setTimeout(r, 10));
  await rec.ended(image);
  t.equal(await readFile(`${image}.bootset.csv`, "utf8"), "offset,length\n131072,65536\n");
  t.equal(stats.open("bfsnap-a"), 0);
});

t.test("an admin's boot set wins: none recorded, none replaced", async (t) => {
  const { stats, rec, image } = setup(t);
  await writeFile(`${image}.bootset.csv`, "0,4096\n");
  t.equal(await rec.start(image, "bfsnap-a", 8 * MIB), false, "a version with one is not recorded");
  await rm(`${image}.bootset.csv`);
  t.equal(await rec.start(image, "bfsnap-a", 8 * MIB), true);
  stats.read("bfsnap-a", 0);
  // The admin copies one in during the recording: it is kept as it is.
  await writeFile(`${image}.bootset.csv`, "offset,length\n0,4096\n");
  await rec.ended(image);
  t.equal(await readFile(`${image}.bootset.csv`, "utf8"), "offset,length\n0,4096\n");
  t.equal(stats.open("bfsnap-a"), 0);
});

t.test("nothing read: no file, and the next boot records", async (t) => {
  const { rec, image } = setup(t);
  t.equal(await rec.start(image, "bfsnap-a", 8 * MIB), true);
  await rec.deviceGoing("bfsnap-a");
  t.notOk(existsSync(`${image}.bootset.csv`));
  t.equal(await rec.start(image, "bfsnap-b", 8 * MIB), true);
});

t.test("a stop deletes the regions and writes nothing; later starts are refused", async (t) => {
  const { stats, rec, image, dir } = setup(t);
  t.equal(await rec.start(image, "bfsnap-a", 8 * MIB), true);
  t.equal(await rec.start(join(dir, "v2.raw"), "bfsnap-b", 8 * MIB), true, "another version");
  stats.read("bfsnap-a", 0);
  await rec.close();
  t.notOk(existsSync(`${image}.bootset.csv`));
  t.equal(stats.open("bfsnap-a") + stats.open("bfsnap-b"), 0);
  t.equal(await rec.start(join(dir, "v3.raw"), "bfsnap-c", 8 * MIB), false);
});

t.test("recording off, or the kernel refusing, only means no recording", async (t) => {
  const off = setup(t, 0);
  t.equal(await off.rec.start(off.image, "bfsnap-a", 8 * MIB), false);
  t.same(off.stats.calls, []);
  const { stats, rec, image } = setup(t);
  stats.failCreate = true;
  t.equal(await rec.start(image, "bfsnap-a", 8 * MIB), false);
  stats.failCreate = false;
  t.equal(await rec.start(image, "bfsnap-a", 8 * MIB), true, "the next boot tries again");
});

t.test("a crashed daemon's regions are swept; another program's are not", async (t) => {
  const { stats, rec } = setup(t);
  await stats.statsCreate("bfsnap-a", 128, BOOT_SET_PROGRAM_ID);
  await stats.statsCreate("bfsnap-a", 128, "other-tool");
  await rec.sweep("bfsnap-a");
  t.same(await stats.statsList("bfsnap-a", BOOT_SET_PROGRAM_ID), []);
  t.same(await stats.statsList("bfsnap-a", "other-tool"), [1]);
  await rec.sweep("bfsnap-gone");
  t.pass("a device without regions (or gone) is no error");
});
