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
