import t from "tap";
import { macsInArpTable, NeighbourTable } from "../../src/host/neighbours.js";

const TABLE = `IP address       HW type     Flags       HW address            Mask     Device
10.99.0.50       0x1         0x2         52:54:00:BF:10:01     *        br0
10.99.0.51       0x1         0x0         00:00:00:00:00:00     *        br0
10.99.0.52       0x1         0x2         52:54:00:bf:10:02     *        br0
10.99.0.52       0x1         0x2         52:54:00:bf:10:03     *        br1
`;

t.test("the ARP table: complete entries only, one MAC or none", async (t) => {
  t.same(macsInArpTable(TABLE, "10.99.0.50"), ["52:54:00:bf:10:01"], "lowercased");
  t.same(macsInArpTable(TABLE, "10.99.0.51"), [], "an incomplete entry is no answer");
  t.same(macsInArpTable(TABLE, "10.99.0.5"), [], "no prefix match");
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
  pending.shift()!("IP address HW type Flags HW address Mask Device\n");
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
