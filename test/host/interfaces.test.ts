import { networkInterfaces } from "node:os";
import t from "tap";
import { ownMacs } from "../../src/host/interfaces.js";

// The host's own MACs, as the proxy-DHCP asks about each request: the kernel's list, any
// case, without the all-zero address of loopback and tunnels.

t.test("this host's interfaces' MACs are its own; others and the zero MAC are not", async (t) => {
  const real = Object.values(networkInterfaces())
    .flat()
    .map((a) => a?.mac)
    .find((m) => m !== undefined && m !== "00:00:00:00:00:00");
  const isOwn = ownMacs();
  if (real) {
    t.ok(isOwn(real), `${real} is this host's`);
    t.ok(isOwn(real.toUpperCase()), "in any case");
  } else {
    t.comment("this host has no interface with a MAC: only the negative cases run");
  }
  t.notOk(isOwn("52:54:00:bf:ff:fe"), "a PC's MAC is not");
  t.notOk(isOwn("00:00:00:00:00:00"), "nor loopback's all-zero address");
});

t.test(
  "a MAC that became ours is seen within a second; a flood of misses reads the kernel once a second",
  async (t) => {
    let now = 0;
    let reads = 0;
    let kernel = new Set(["52:54:00:00:00:01"]);
    const isOwn = ownMacs({
      clock: () => now,
      read: () => {
        reads++;
        return new Set(kernel);
      },
    });
    t.ok(isOwn("52:54:00:00:00:01"), "the first call reads the kernel's list");
    t.equal(reads, 1);
    // A bridge takes a new port's MAC.
    kernel = new Set(["52:54:00:00:00:01", "52:54:00:00:00:02"]);
    now = 500;
    t.notOk(isOwn("52:54:00:00:00:02"), "half a second after a read, a miss is not read again");
    for (let i = 0; i < 1000; i++)
      isOwn(`52:54:00:aa:00:${(i % 256).toString(16).padStart(2, "0")}`);
    t.equal(reads, 1, "a thousand foreign MACs within the second: no new read");
    now = 1_000;
    t.ok(isOwn("52:54:00:00:00:02"), "a second after the read, the miss reads again and finds it");
    t.equal(reads, 2);
    now = 1_500;
    t.ok(isOwn("52:54:00:00:00:01"), "hits are answered from the list");
    t.equal(reads, 2);
    kernel = new Set(["52:54:00:00:00:02"]);
    now = 10_999;
    t.ok(isOwn("52:54:00:00:00:01"), "a hit stays a hit until the list is ten seconds old");
    t.equal(reads, 2);
    now = 11_000;
    t.notOk(isOwn("52:54:00:00:00:01"), "then the list is read again");
    t.equal(reads, 3);
  },
);
