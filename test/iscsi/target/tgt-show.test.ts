import { readFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import {
  parseTgtShowAccounts,
  parseTgtShowPortals,
  parseTgtShowTargets,
} from "../../../src/iscsi/target/tgt-show.js";

// Real tgtadm output; the commands that produced it are in the README beside it, and the
// expectations below come from those commands, not from what the parser printed.
const fixtures = join(import.meta.dirname, "../../fixtures/iscsi");
const read = (f: string) => readFileSync(join(fixtures, f), "utf8");

t.test("targets, LUNs, accounts, ACLs and the logged-in nexus of real tgtadm output", async (t) => {
  const targets = parseTgtShowTargets(read("tgtadm-show-target.txt"));
  t.same(
    targets.map((x) => [x.tid, x.iqn]),
    [
      [1, "iqn.2026-11.lan.bootfleet:pc01"],
      [3, "iqn.2026-11.lan.bootfleet:pc03"],
    ],
  );
  const [a, b] = targets;
  if (!a || !b) throw new Error("two targets expected");
  t.equal(a.state, "ready");
  t.same(a.nexuses.length, 1);
  t.equal(a.nexuses[0]?.initiator, "iqn.2026-11.lan.client:pc01");
  t.same(a.nexuses[0]?.addresses, ["127.0.0.1"]);
  t.same(
    a.luns.map((l) => [l.lun, l.backingStorePath, l.readOnly, l.scsiSn]),
    [
      [0, "None", false, "beaf10"],
      [1, "/tmp/bfx/disk1.img", false, "0b6f7c1e-3d2a-4f5b-9c8d-7e6f5a4b3c2d"],
      [2, "/tmp/bfx/disk2.img", true, "games-0001"],
    ],
  );
  t.equal(a.luns[0]?.type, "controller", "tgt's LUN 0 is its controller");
  t.equal(a.luns[2]?.scsiId, "games-0001");
  t.same(a.incomingUsers, ["pc01"]);
  t.same(a.outgoingUsers, ["srv01"]);
  t.same(a.acl, ["iqn.2026-11.lan.client:pc01"]);
  t.same(b.nexuses, [], "no session on the second target");
  t.same(b.incomingUsers, []);
  t.same(b.acl, ["10.0.0.1"]);
});

t.test("portal and account lists of real tgtadm output", async (t) => {
  t.same(parseTgtShowPortals(read("tgtadm-show-portal.txt")), [
    { address: "127.0.0.1", port: 13263 },
  ]);
  t.same(parseTgtShowPortals("Portal: [::1]:3260,1\n"), [{ address: "::1", port: 3260 }]);
  t.same(parseTgtShowAccounts(read("tgtadm-show-account.txt")).sort(), ["pc01", "srv01"]);
});

t.test("no targets", async (t) => {
  t.same(parseTgtShowTargets(""), []);
});
