import t from "tap";
import { arpTableByAddress, NeighbourTable } from "../../src/host/neighbours.js";

const HEADER = "IP address       HW type     Flags       HW address            Mask     Device\n";
const TABLE = `${HEADER}10.99.0.50       0x1         0x2         52:54:00:BF:10:01     *        br0
10.99.0.51       0x1         0x0         00:00:00:00:00:00     *        br0
10.99.0.52       0x1         0x2         52:54:00:bf:10:02     *        br0
10.99.0.52       0x1         0x2         52:54:00:bf:10:03     *        br1
`;

t.test("the ARP table: complete entries only, one MAC or none", async (t) => {
  const byAddress = arpTableByAddress(TABLE);
  t.same(byAddress.get("10.99.0.50"), ["52:54:00:bf:10:01"], "lowercased");
  t.equal(byAddress.get("10.99.0.51"), undefined, "an incomplete entry is no answer");
  t.equal(byAddress.get("10.99.0.5"), undefined, "no prefix match");
  const table = new NeighbourTable(() => TABLE);
  t.equal(await table.macForIp("10.99.0.50"), "52:54:00:bf:10:01");
  t.equal(await table.macForIp("10.99.0.52"), undefined, "two interfaces disagree: no answer");
  t.equal(await table.macForIp("10.99.0.99"), undefined);
  const broken = new NeighbourTable(() => {
    throw new Error("EACCES");
  });
  t.equal(await broken.macForIp("10.99.0.50"), undefined, "an unreadable table is no answer");
});

t.test("lookups of one turn share one read, made after they asked", async (t) => {
  let reads = 0;
  let text = HEADER;
  const table = new NeighbourTable(() => {
    reads++;
    return text;
  });
  const burst = Array.from({ length: 100 }, () => table.macForIp("10.99.0.50"));
  // The kernel makes the entry after the lookups asked, before the turn ends: it is seen.
  text = TABLE;
  t.equal(reads, 0, "not read while the turn runs");
  t.same(new Set(await Promise.all(burst)), new Set(["52:54:00:bf:10:01"]), "all see the entry");
  t.equal(reads, 1, "one read for the burst");
  text = HEADER;
  t.equal(await table.macForIp("10.99.0.50"), undefined, "a later lookup reads again: gone");
  t.equal(reads, 2);
});
