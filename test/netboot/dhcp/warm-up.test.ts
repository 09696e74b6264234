// The warm-up at start (dhcp/warm-up.ts) runs the whole per-request path on its sample
// requests, every one to a built reply, and stops at its time budget; it asks nothing of
// the daemon's policy (which would record the sample MACs) beyond the own-MAC check.
import t from "tap";
import { warmUpProxyPath } from "../../../src/netboot/dhcp/warm-up.js";

const bootFiles = { bios: "undionly.kpxe", uefiX64: "snponly.efi" };

t.test("every sample request gets a reply built, in every round", async (t) => {
  const r = warmUpProxyPath({ bootFiles, serverAddress: "10.99.0.1", rounds: 5 });
  // BIOS and UEFI DISCOVERs, iPXE's DISCOVER, UEFI's REQUEST on 4011.
  t.equal(r.replies, 20);
  t.ok(r.ms >= 0);
});

t.test(
  "a spent time budget stops it at the next look at the clock (every 50 rounds)",
  async (t) => {
    const r = warmUpProxyPath({ bootFiles, serverAddress: "10.99.0.1", rounds: 1000, budgetMs: 0 });
    t.equal(r.replies, 50 * 4);
  },
);

t.test("the own-MAC check is asked, and a MAC it claims gets nothing built", async (t) => {
  const asked = new Set<string>();
  const r = warmUpProxyPath({
    bootFiles,
    serverAddress: "10.99.0.1",
    rounds: 2,
    isOwnMac: (mac) => {
      asked.add(mac);
      return true;
    },
  });
  t.equal(r.replies, 0);
  t.same([...asked], ["00:00:5e:00:53:01"]);
});

t.test("no UEFI boot file configured: the UEFI samples are not answered", async (t) => {
  const r = warmUpProxyPath({
    bootFiles: { bios: "undionly.kpxe", uefiX64: "" },
    serverAddress: "10.99.0.1",
    rounds: 3,
  });
  // BIOS DISCOVER and iPXE's (a script URL) only.
  t.equal(r.replies, 6);
});
