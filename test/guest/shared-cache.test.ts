// dm-snapshot overlays share the golden image's page cache (issue 13, item 1), proven in a
// Debian 12 guest (kernel 6.1: real device-mapper and loop devices): 8 machines' disks made
// by the driver, caches dropped, each disk read whole with O_DIRECT (as LIO's block backstore
// reads); the bytes the disk under the image file system delivered (/proc/diskstats), over
// the image size, against 8 reflink clones of the same image read as LIO's fileio backstore
// reads them (buffered), in the same run. Then reset, usage, isolation, adoption after a
// restart and after the devices are gone, a version made from a draft, boot-set warming
// (item 2), and teardown that leaves no dm or loop device behind.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { tempDir } from "../helpers/daemon.js";
import { shareAgent } from "./harness/agent-cli.js";
import { bootGuest, GUEST_FILE_TIMEOUT_MS, type Guest, guestSkipReason } from "./harness/guest.js";

const MACHINES = 8;
const IMAGE_MIB = 128;
const IMAGE_BYTES = IMAGE_MIB << 20;
const ROOT = "/srv/bf";
const IMAGES = `${ROOT}/images`;
const GOLDEN = `${IMAGES}/golden.raw`;
const BOOT_SET = join(import.meta.dirname, "../../bench/storm/boot-set/debian-12-bios.csv");
/** Each guest step under TCG on a shared 2-core host: minutes, not seconds. */
const STEP_MS = 600_000;

t.setTimeout(GUEST_FILE_TIMEOUT_MS + 30 * 60_000);

interface Ref {
  kind: string;
  path: string;
  sizeBytes: number;
}

const ids = Array.from({ length: MACHINES }, (_, i) => `m${i + 1}`);
const dev = (id: string) => `/dev/mapper/bfsnap-${id}`;

/** Sectors read from vdb (the disk under the image file system), /proc/diskstats field 6. */
async function sectorsRead(g: Guest): Promise<number> {
  const line = (await g.sh("cat /proc/diskstats"))
    .split("\n")
    .find((l) => l.trim().split(/\s+/)[2] === "vdb");
  if (!line) throw new Error("vdb is not in /proc/diskstats");
  return Number(line.trim().split(/\s+/)[5]);
}

/** Bytes the disk delivered while `read` ran, after the page cache was emptied. */
async function diskBytesFor(g: Guest, read: string): Promise<number> {
  await g.sh("sync && echo 3 > /proc/sys/vm/drop_caches");
  const before = await sectorsRead(g);
  await g.job(read, STEP_MS);
  return ((await sectorsRead(g)) - before) * 512;
}

/** Bytes of a file in the page cache (util-linux fincore). */
async function cached(g: Guest, files: string[]): Promise<number> {
  const out = await g.sh(`fincore --bytes --noheadings --output RES ${files.join(" ")}`);
  return out
    .split("\n")
    .filter(Boolean)
    .reduce((a, l) => a + Number(l.trim()), 0);
}

const mib = (b: number) => (b / 2 ** 20).toFixed(1);

/** Bytes of the distinct 4 KiB pages a boot set's `offset,length` lines touch. */
function pagesTouched(lines: string[]): number {
  const pages = new Set<number>();
  for (const line of lines.slice(1)) {
    const [o, n] = line.split(",").map(Number);
    if (o === undefined || n === undefined || !(n > 0)) continue;
    for (let p = Math.floor(o / 4096); p < Math.ceil((o + n) / 4096); p++) pages.add(p);
  }
  return pages.size * 4096;
}

t.test(
  "dm-snapshot overlays share the image's page cache",
  { skip: guestSkipReason() },
  async (t) => {
    const share = tempDir(t, `bf-shared-cache-${process.pid}-`);
    await shareAgent(share, join(import.meta.dirname, "shared-cache/agent.ts"));
    // The recorded boot set of the Debian image, clipped to this image's 128 MiB.
    const clipped = readFileSync(BOOT_SET, "utf8")
      .split("\n")
      .filter((l, i) => {
        if (i === 0) return true;
        const [o, n] = l.split(",").map(Number);
        return o !== undefined && n !== undefined && o + n <= IMAGE_BYTES;
      });
    writeFileSync(join(share, "golden.bootset.csv"), `${clipped.join("\n")}\n`);
    const bootSetPages = pagesTouched(clipped);

    const g = await bootGuest(t, {
      shareDir: share,
      extraDisks: [{ sizeMiB: 2048 }],
      // Other engineers' work shares these 2 cores: a TCG boot may take many minutes.
      bootTimeoutMs: 900_000,
      log: (m) => t.comment(m),
    });
    await g.sh(
      `cp /host/node /usr/local/bin/node && cp /host/agent.cjs /root/agent.cjs
     mkfs.xfs -q -m reflink=1 /dev/vdb && mkdir -p ${ROOT} && mount /dev/vdb ${ROOT}
     mkdir -p ${IMAGES} ${ROOT}/overlays ${ROOT}/reflink
     dd if=/dev/urandom of=${GOLDEN} bs=1M count=${IMAGE_MIB} status=none && sync`,
      { timeoutMs: STEP_MS },
    );
    const agent = async <T>(...args: string[]): Promise<T> =>
      JSON.parse(
        await g.sh(`/usr/local/bin/node /root/agent.cjs ${args.join(" ")}`, { timeoutMs: STEP_MS }),
      ) as T;
    const head = (path: string, n = 11) =>
      g.sh(`dd if=${path} bs=4096 count=1 iflag=direct status=none | head -c ${n}`);
    const loops = async () =>
      (await g.sh("losetup --list --noheadings --output NAME,BACK-FILE"))
        .split("\n")
        .filter((l) => l.includes(ROOT));
    const snapDevices = async () =>
      (await g.sh("dmsetup ls")).split("\n").filter((l) => l.startsWith("bfsnap-"));
    const goldenHead = await head(GOLDEN);

    await t.test("8 machines' disks: one shared loop device of the image", async (t) => {
      await agent("check");
      const refs = await agent<Ref[]>("create", GOLDEN, ...ids);
      t.same(
        refs,
        ids.map((id) => ({ kind: "block", path: dev(id), sizeBytes: IMAGE_BYTES })),
      );
      const l = await loops();
      t.equal(
        l.filter((x) => x.endsWith(GOLDEN)).length,
        1,
        `one loop device of the image:\n${l.join("\n")}`,
      );
      t.equal(l.filter((x) => x.endsWith(".cow")).length, MACHINES, "one store loop per machine");
      t.equal((await snapDevices()).length, MACHINES);
      t.same(await agent("list"), [...ids].sort());
      t.equal(await head(dev("m5")), goldenHead, "a machine's disk starts as the image");
    });

    await t.test("read whole by 8 machines: the disk delivers the image once", async (t) => {
      const shared = await diskBytesFor(
        g,
        ids
          .map((id) => `dd if=${dev(id)} of=/dev/null bs=1M iflag=direct status=none`)
          .join(" && "),
      );
      const sharedCached = await cached(g, [GOLDEN]);
      for (let i = 1; i <= MACHINES; i++) {
        await g.sh(`cp --reflink=always ${GOLDEN} ${ROOT}/reflink/r${i}.img`);
      }
      const clones = ids.map((_, i) => `${ROOT}/reflink/r${i + 1}.img`);
      // LIO's fileio backstore (write_back, as bootfleet sets it) reads through the page cache.
      const reflink = await diskBytesFor(
        g,
        clones.map((c) => `dd if=${c} of=/dev/null bs=1M status=none`).join(" && "),
      );
      const reflinkCached = await cached(g, clones);
      const sharedRatio = shared / IMAGE_BYTES;
      const reflinkRatio = reflink / IMAGE_BYTES;
      t.comment(
        `${MACHINES} machines x ${IMAGE_MIB} MiB image, caches dropped, each disk read whole:\n` +
          `  dm-snapshot (O_DIRECT on /dev/mapper): ${mib(shared)} MiB from vdb = ${sharedRatio.toFixed(3)} x image; image pages cached ${mib(sharedCached)} MiB\n` +
          `  reflink clones (buffered):             ${mib(reflink)} MiB from vdb = ${reflinkRatio.toFixed(3)} x image; clone pages cached ${mib(reflinkCached)} MiB`,
      );
      t.ok(
        sharedRatio <= 1.1,
        `shared: ${sharedRatio.toFixed(3)} x the image read from disk (<= 1.1)`,
      );
      t.ok(
        sharedCached <= 1.1 * IMAGE_BYTES,
        `shared: ${mib(sharedCached)} MiB of image pages cached`,
      );
      t.ok(
        reflinkRatio > 4,
        `reflink: ${reflinkRatio.toFixed(3)} x the image read from disk (> 4)`,
      );
      await g.sh(`rm -f ${clones.join(" ")}`);
    });

    await t.test("a machine's write stays its own; usage counts it", async (t) => {
      await g.sh(
        `printf MACHINE-ONE | dd of=${dev("m1")} bs=4096 count=1 conv=sync,notrunc oflag=direct status=none`,
      );
      t.equal(await head(dev("m1")), "MACHINE-ONE", "m1 reads its write");
      t.equal(await head(dev("m2")), goldenHead, "m2 does not see it");
      t.equal(await head(GOLDEN), goldenHead, "nor does the image");
      const u1 = await agent<{ allocatedBytes: number; uniqueBytes: number }>("usage", "m1");
      const u2 = await agent<{ allocatedBytes: number; uniqueBytes: number }>("usage", "m2");
      t.comment(`usage: m1 ${JSON.stringify(u1)}, m2 ${JSON.stringify(u2)}`);
      t.ok(u1.uniqueBytes >= u2.uniqueBytes + 4096, "m1 holds at least its 4 KiB more than m2");
      t.ok(u2.allocatedBytes < 1 << 20, "an unwritten machine holds almost nothing");
    });

    await t.test("adoption: after a daemon restart, and after the devices are gone", async (t) => {
      const ref = await agent<Ref>("create", GOLDEN, "m1");
      t.equal(ref.path, dev("m1"));
      t.equal((await snapDevices()).length, MACHINES, "the running device was adopted, not remade");
      t.equal(await head(dev("m1")), "MACHINE-ONE");
      // A reboot takes every dm and loop device away; the stores on disk stay.
      await g.sh("dmsetup remove bfsnap-m1");
      t.equal(
        (await loops()).filter((x) => x.endsWith("m1.cow")).length,
        0,
        "its store loop cleared itself",
      );
      await agent<Ref>("create", GOLDEN, "m1");
      t.equal(
        await head(dev("m1")),
        "MACHINE-ONE",
        "rebuilt from its persistent store, write kept",
      );
      t.equal((await loops()).filter((x) => x.endsWith(GOLDEN)).length, 1, "still one image loop");
    });

    await t.test("reset drops the machine's writes", async (t) => {
      await agent<Ref>("reset", GOLDEN, "m1");
      t.equal(await head(dev("m1")), goldenHead);
      const u = await agent<{ allocatedBytes: number }>("usage", "m1");
      t.ok(u.allocatedBytes < 1 << 20, `a fresh store: ${u.allocatedBytes} bytes`);
    });

    await t.test("a version from a draft: the image plus what the draft wrote", async (t) => {
      await g.sh(
        `printf DRAFT-A | dd of=${dev("m2")} bs=4096 count=1 conv=sync,notrunc oflag=direct status=none
       printf DRAFT-B | dd of=${dev("m2")} bs=4096 seek=${(64 << 20) / 4096} count=1 conv=sync,notrunc oflag=direct status=none`,
      );
      const v = await agent<Ref>("freeze", "m2", "golden-v2");
      t.same(v, { kind: "file", path: `${IMAGES}/golden-v2.raw`, sizeBytes: IMAGE_BYTES });
      const sum = (p: string, direct: boolean) =>
        g.job(`dd if=${p} bs=1M ${direct ? "iflag=direct" : ""} status=none | sha256sum`, STEP_MS);
      t.equal(
        await sum(v.path, false),
        await sum(dev("m2"), true),
        "the version is the draft's disk",
      );
      t.equal(await head(GOLDEN), goldenHead, "the image it came from is unchanged");
    });

    await t.test("warming reads the boot set into the image's cache", async (t) => {
      await g.sh(`cp /host/golden.bootset.csv ${GOLDEN}.bootset.csv`);
      const warmRead = await diskBytesFor(g, `/usr/local/bin/node /root/agent.cjs warm ${GOLDEN}`);
      const warmCached = await cached(g, [GOLDEN]);
      // Nothing dropped now: one machine reads its whole disk after the warming.
      const before = await sectorsRead(g);
      await g.job(`dd if=${dev("m3")} of=/dev/null bs=1M iflag=direct status=none`, STEP_MS);
      const after = ((await sectorsRead(g)) - before) * 512;
      t.comment(
        `warming: ${mib(warmRead)} MiB read from vdb, ${mib(warmCached)} MiB of the image cached; a machine's whole-disk read then took ${mib(after)} MiB from vdb (of ${IMAGE_MIB})`,
      );
      // The set's own pages, not a read-ahead window past each range (warming in file order
      // read 14.9 MiB from the disk for these 12.8).
      t.ok(
        warmRead <= bootSetPages * 1.02 + (128 << 10),
        `warming read the set's pages from the disk (${warmRead} bytes for ${bootSetPages}), no read-ahead`,
      );
      t.ok(warmCached >= bootSetPages, "the clipped boot set (838 reads) is in the cache");
      t.ok(
        after <= IMAGE_BYTES - warmCached + (4 << 20),
        "a machine's reads of it did not go to disk",
      );
    });

    await t.test("teardown leaves no dm or loop device behind", async (t) => {
      await agent("delete", ...ids);
      t.same(await snapDevices(), [], "no snapshot device");
      t.same(await loops(), [], "no loop device of the image or the stores");
      t.same(await agent("list"), []);
      t.equal((await g.sh(`ls ${ROOT}/overlays`)).trim(), "", "no store or record left");
    });
  },
);
