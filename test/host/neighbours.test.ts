import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { arpTableReader, macsInArpTable, NeighbourTable } from "../../src/host/neighbours.js";

const HEADER = "IP address       HW type     Flags       HW address            Mask     Device\n";
const TABLE = `${HEADER}10.99.0.50       0x1         0x2         52:54:00:BF:10:01     *        br0
10.99.0.51       0x1         0x0         00:00:00:00:00:00     *        br0
10.99.0.52       0x1         0x2         52:54:00:bf:10:02     *        br0
10.99.0.52       0x1         0x2         52:54:00:bf:10:03     *        br1
10.99.0.5        0x1         0x2         52:54:00:bf:10:05     *        br1`;

t.test("the ARP table: complete entries only, one MAC or none", async (t) => {
  t.same(macsInArpTable(TABLE, "10.99.0.50"), ["52:54:00:bf:10:01"], "lowercased");
  t.same(macsInArpTable(TABLE, "10.99.0.51"), [], "an incomplete entry is no answer");
  t.same(macsInArpTable(TABLE, "10.99.0.5"), ["52:54:00:bf:10:05"], "no prefix match, last line");
  t.same(macsInArpTable(TABLE, "10.99.0.5 "), [], "an address, not a pattern");
  t.same(macsInArpTable(TABLE, "IP"), [], "not the header");
  const table = new NeighbourTable(async () => TABLE);
  t.equal(await table.macForIp("10.99.0.50"), "52:54:00:bf:10:01");
  t.equal(await table.macForIp("10.99.0.52"), undefined, "two interfaces disagree: no answer");
  t.equal(await table.macForIp("10.99.0.99"), undefined);
  const broken = new NeighbourTable(async () => {
    throw new Error("EACCES");
  });
  t.equal(await broken.macForIp("10.99.0.50"), undefined, "an unreadable table is no answer");
});

t.test("a burst of lookups costs a read in flight and one after it", async (t) => {
  let reads = 0;
  const pending: ((text: string) => void)[] = [];
  const table = new NeighbourTable(
    () =>
      new Promise<string>((resolve) => {
        reads++;
        pending.push(resolve);
      }),
  );
  const first = table.macForIp("10.99.0.50");
  const burst = Array.from({ length: 100 }, () => table.macForIp("10.99.0.50"));
  t.equal(reads, 1, "one read in flight");
  pending.shift()!(HEADER);
  t.equal(await first, undefined, "the first lookup saw the table as it was");
  await new Promise((r) => setImmediate(r));
  t.equal(reads, 2, "the burst waits for one read that started after it asked");
  pending.shift()!(TABLE);
  t.same(
    new Set(await Promise.all(burst)),
    new Set(["52:54:00:bf:10:01"]),
    "and every lookup of the burst sees it",
  );
  t.equal(reads, 2);
});

t.test("the kernel's table, read again through its kept descriptor", async (t) => {
  // /proc/net/arp itself: its text is made again at each read from offset 0.
  const table = new NeighbourTable();
  for (let i = 0; i < 3; i++) {
    t.equal(await table.macForIp("192.0.2.254"), undefined, `read ${i + 1}: no such neighbour`);
  }
  // A file standing in for it: a table over the first buffer (64 KiB) is read whole.
  const dir = mkdtempSync(join(tmpdir(), "bf-arp-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const lines = [HEADER.trimEnd()];
  for (let i = 0; i < 2000; i++) {
    const mac = `52:54:00:aa:${((i >> 8) & 255).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`;
    lines.push(`10.97.${i >> 8}.${i & 255}       0x1         0x2         ${mac}     *        br0`);
  }
  writeFileSync(join(dir, "arp"), `${lines.join("\n")}\n`);
  t.ok(lines.join("\n").length > 2 * 64 * 1024, "the stand-in is over two buffers");
  const big = new NeighbourTable(arpTableReader(join(dir, "arp")));
  t.equal(await big.macForIp("10.97.7.207"), "52:54:00:aa:07:cf", "the last entry is found");
  t.equal(await big.macForIp("10.97.0.0"), "52:54:00:aa:00:00", "and the first");
  t.equal(await big.macForIp("10.97.7.207"), "52:54:00:aa:07:cf", "read again, same answer");
});

t.test(
  "a kernel table of 600 neighbours, a page per read, is read whole",
  { skip: process.getuid?.() !== 0 ? "needs root: makes a network namespace" : false },
  async (t) => {
    const { execFileSync, spawn } = await import("node:child_process");
    const ns = `bf-arp-${process.pid}`;
    const ip = (...a: string[]) => execFileSync("ip", a, { stdio: "pipe" });
    ip("netns", "add", ns);
    t.teardown(() => ip("netns", "del", ns));
    ip("-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1");
    ip("-n", ns, "link", "set", "v0", "up");
    ip("-n", ns, "addr", "add", "10.1.0.1/16", "dev", "v0");
    const batch: string[] = [];
    const macOf = (i: number) =>
      `52:54:00:00:${(i >> 8).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`;
    const addrOf = (i: number) => `10.1.${Math.floor(i / 250)}.${(i % 250) + 2}`;
    for (let i = 0; i < 600; i++) batch.push(`neigh add ${addrOf(i)} lladdr ${macOf(i)} dev v0`);
    execFileSync("ip", ["-n", ns, "-batch", "-"], { input: `${batch.join("\n")}\n` });
    // The namespace's table, through a process living in it.
    const sleeper = spawn("ip", ["netns", "exec", ns, "sleep", "30"], { stdio: "ignore" });
    t.teardown(() => sleeper.kill());
    const path = `/proc/${sleeper.pid}/net/arp`;
    for (let i = 0; i < 50; i++) {
      const { readFileSync } = await import("node:fs");
      if (readFileSync(path, "utf8").includes("10.1.2.101")) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const table = new NeighbourTable(arpTableReader(path));
    t.equal(await table.macForIp(addrOf(599)), macOf(599), "the last neighbour");
    t.equal(await table.macForIp(addrOf(0)), macOf(0), "the first");
    t.equal(await table.macForIp(addrOf(300)), macOf(300), "one between, read again");
  },
);
