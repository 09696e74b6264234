// The product records a version's boot set by itself (issue 13, item 2), proven in the
// Debian 12 guest (kernel 6.1: real device-mapper statistics on real dm-snapshot devices
// made by the driver): known ranges are read through a machine's disk with O_DIRECT (as
// LIO's block backstore reads), the recording ends (its window, its device going, a stop),
// and the written `<version>.bootset.csv` must cover exactly the 64 KiB areas read, nothing
// else; then warming from it must put those blocks in the image's cache, so a machine's
// reads of them no longer reach the disk.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { parseStatsPrint, readRanges } from "../../src/iscsi/boot-set-areas.js";
import { tempDir } from "../helpers/daemon.js";
import { shareAgent } from "./harness/agent-cli.js";
import { bootGuest, GUEST_FILE_TIMEOUT_MS, type Guest, guestSkipReason } from "./harness/guest.js";

const IMAGE_MIB = 64;
const ROOT = "/srv/bf";
const IMAGES = `${ROOT}/images`;
const GOLDEN = `${IMAGES}/golden.raw`;
const GOLDEN2 = `${IMAGES}/golden2.raw`;
const STEP_MS = 600_000;
const FIXTURE = join(import.meta.dirname, "../fixtures/dm-stats/print-64k-areas-64mib.txt");
const KIB = 1024;
const MIB = 1024 * KIB;

t.setTimeout(GUEST_FILE_TIMEOUT_MS + 20 * 60_000);

/** What a boot reads (bytes), as `offset:length` for the agent. */
const READS = [
  [0, 4 * KIB], // the first area
  [MIB + 60 * KIB, 8 * KIB], // across an area boundary: two areas
  [8 * MIB, 256 * KIB], // four areas...
  [8 * MIB + 256 * KIB, 64 * KIB], // ...and the one right after: one range of five
  [IMAGE_MIB * MIB - 512, 512], // the last sector: the last area
].map(([o, n]) => `${o}:${n}`);
/** Those reads at 64 KiB granularity, adjacent areas merged. */
const EXPECTED = [
  [0, 64 * KIB],
  [MIB, 128 * KIB],
  [8 * MIB, 320 * KIB],
  [IMAGE_MIB * MIB - 64 * KIB, 64 * KIB],
];
const expectedCsv = `offset,length\n${EXPECTED.map(([o, n]) => `${o},${n}\n`).join("")}`;
const expectedBytes = EXPECTED.reduce((a, [, n]) => a + (n ?? 0), 0);

/** Sectors read from vda (the guest's root disk, which holds the images). */
async function sectorsRead(g: Guest): Promise<number> {
  const line = (await g.sh("cat /proc/diskstats"))
    .split("\n")
    .find((l) => l.trim().split(/\s+/)[2] === "vda");
  if (!line) throw new Error("vda is not in /proc/diskstats");
  return Number(line.trim().split(/\s+/)[5]);
}

t.test(
  "a version's first boot is recorded as its boot set",
  { skip: guestSkipReason() },
  async (t) => {
    const share = tempDir(t, `bf-boot-set-record-${process.pid}-`);
    await shareAgent(share, join(import.meta.dirname, "boot-set-record/agent.ts"));
    const g = await bootGuest(t, {
      shareDir: share,
      bootTimeoutMs: 900_000,
      log: (m) => t.comment(m),
    });
    await g.sh(
      `cp /host/node /usr/local/bin/node && cp /host/agent.cjs /root/agent.cjs
     mkdir -p ${IMAGES} ${ROOT}/overlays
     dd if=/dev/urandom of=${GOLDEN} bs=1M count=${IMAGE_MIB} status=none
     dd if=/dev/urandom of=${GOLDEN2} bs=1M count=${IMAGE_MIB} status=none && sync`,
      { timeoutMs: STEP_MS },
    );
    const agent = async <T>(env: string, ...args: string[]): Promise<T> =>
      JSON.parse(
        await g.sh(`${env} /usr/local/bin/node /root/agent.cjs ${args.join(" ")}`, {
          timeoutMs: STEP_MS,
        }),
      ) as T;
    const regions = (name: string) => g.sh(`dmsetup message ${name} 0 @stats_list`);

    await agent("", "create", GOLDEN, "m1", "m2");
    await agent("", "create", GOLDEN2, "m3");
    // udev's probe of the new devices reads them too: done before any recording starts.
    await g.sh("udevadm settle");

    await t.test("ended by its window: exactly the areas read, merged", async (t) => {
      const r = await agent<{
        started: boolean;
        second: boolean;
        region: string;
        csv: string | null;
        regions_left: string;
      }>("BF_RECORD_SECONDS=3", "record", GOLDEN, "m1", "m2", "/host/stats-print.txt", ...READS);
      t.equal(r.started, true, "the first machine of the version records");
      t.equal(r.second, false, "a second machine of it does not, while the first records");
      t.equal(r.csv, expectedCsv, "the boot set is the 64 KiB areas read, adjacent ones merged");
      t.equal(r.regions_left.trim(), "", "the statistics region is deleted");
      const print = readFileSync(join(share, "stats-print.txt"), "utf8");
      // The parser's unit test reads a print captured here (test/fixtures/dm-stats): the
      // kernel still prints what it was written for, and it says the same of this boot.
      t.same(
        readRanges(parseStatsPrint(print), IMAGE_MIB * MIB),
        readRanges(parseStatsPrint(readFileSync(FIXTURE, "utf8")), IMAGE_MIB * MIB),
        "the kernel's print parses as the fixture does",
      );
      t.equal(
        print.trim().split("\n").length,
        (IMAGE_MIB * MIB) / (64 * KIB),
        "1024 areas of 64 KiB",
      );
      t.comment(
        `kernel's @stats_print (read areas):\n${print
          .split("\n")
          .filter((l) => !/ 0 0 0 0 0 0 0 0 0 0 0 0 0$/.test(l))
          .join("\n")}`,
      );
    });

    await t.test("warming from it puts those blocks in the cache", async (t) => {
      // Only the image's pages leave the cache (dd's nocache: fadvise DONTNEED on the file),
      // not those of the programs that read: what vda delivers is the machine's reads.
      const evict = `dd if=${GOLDEN} iflag=nocache count=0 status=none`;
      const reads = READS.map((r) => {
        const [o, n] = r.split(":");
        return `dd if=/dev/mapper/bfsnap-m2 of=/dev/null bs=${n} count=1 skip=${o} iflag=direct,skip_bytes status=none`;
      }).join(" && ");
      const diskBytesFor = async (script: string) => {
        await g.sh(script); // once, so the programs are in the cache
        await g.sh(evict);
        const before = await sectorsRead(g);
        await g.sh(script);
        return ((await sectorsRead(g)) - before) * 512;
      };
      const cold = await diskBytesFor(reads);
      await g.sh(evict);
      const warmed = await agent<number>("", "warm", GOLDEN);
      const cachedBytes = Number(
        (await g.sh(`fincore --bytes --noheadings --output RES ${GOLDEN}`)).trim(),
      );
      const before = await sectorsRead(g);
      await g.sh(reads);
      const warm = ((await sectorsRead(g)) - before) * 512;
      t.comment(
        `boot set ${expectedBytes} bytes; warmed ${warmed}, image pages cached ${cachedBytes}; the machine's reads of it: cold ${cold} bytes from vda, after warming ${warm}`,
      );
      t.equal(warmed, expectedBytes, "warming read the recorded set");
      t.ok(cachedBytes >= expectedBytes, "the set is in the image's cache");
      t.ok(cold >= 4 * 4 * KIB, `cold, the reads reached the disk (${cold} bytes)`);
      t.ok(warm < 4 * 4 * KIB, `warm, they did not (${warm} bytes)`);
    });

    await t.test("ended by its device going (a reset): what was read so far", async (t) => {
      const r = await agent<{
        started: boolean;
        csv: string | null;
        again: boolean;
        regions_left: string;
      }>("BF_RECORD_SECONDS=600", "record-reset", GOLDEN2, "m3", ...READS.slice(0, 2));
      t.equal(r.started, true);
      t.equal(r.csv, `offset,length\n0,${64 * KIB}\n${MIB},${128 * KIB}\n`);
      t.equal(r.again, false, "a version with a boot set is not recorded again");
      t.equal(r.regions_left.trim(), "", "the new device has no region");
    });

    await t.test("a stop deletes its region and writes nothing", async (t) => {
      await g.sh(`rm ${GOLDEN2}.bootset.csv`);
      const r = await agent<{ started: boolean; written: boolean; regions_left: string }>(
        "BF_RECORD_SECONDS=600",
        "record-stop",
        GOLDEN2,
        "m3",
        ...READS,
      );
      t.same(r, { started: true, written: false, regions_left: "" });
    });

    await t.test(
      "a stale region of a crashed daemon is deleted when its device is adopted",
      async (t) => {
        await g.sh("dmsetup message bfsnap-m3 0 '@stats_create - 128 bootfleet-bootset'");
        await g.sh("dmsetup message bfsnap-m3 0 '@stats_create - 256 other-tool'");
        t.match(await regions("bfsnap-m3"), /bootfleet-bootset/);
        await agent("", "create", GOLDEN2, "m3");
        const left = (await regions("bfsnap-m3")).trim();
        t.notMatch(left, /bootfleet-bootset/, "ours is gone");
        t.match(left, /other-tool/, "another program's region is left alone");
      },
    );

    await t.test("teardown leaves no dm device behind", async (t) => {
      await agent("", "delete", "m1", "m2", "m3");
      t.equal(
        (await g.sh("dmsetup ls")).split("\n").filter((l) => l.startsWith("bfsnap-")).length,
        0,
      );
    });
  },
);
