import t from "tap";
import { parseTgtConf, renderTgtConf } from "../../../src/iscsi/target/tgt-conf.js";
import type { TargetSpec } from "../../../src/iscsi/target/types.js";

const spec: TargetSpec = {
  iqn: "iqn.2026-11.lan.bootfleet:pc01",
  portal: { address: "10.99.0.1", port: 3260 },
  luns: [
    {
      lun: 2,
      path: "/srv/games.img",
      kind: "file",
      readOnly: true,
      sizeBytes: 4096,
      wwn: "games-0001",
    },
    {
      lun: 1,
      path: "/srv/pc01.img",
      kind: "file",
      readOnly: false,
      sizeBytes: 4096,
      wwn: "sys-pc01",
    },
  ],
  acl: {
    initiatorIqn: "iqn.2010-04.org.ipxe:pc01",
    chapUser: "pc01",
    chapPassword: "secretsecret12",
    mutualUser: "srv01",
    mutualPassword: "mutualsecret99",
  },
};

t.test("the tgt config carries every LUN, account and the initiator binding", async (t) => {
  const text = renderTgtConf(spec);
  // The keywords are tgt-admin's (targets.conf.example of tgt 1.0.85).
  t.match(text, /^<target iqn\.2026-11\.lan\.bootfleet:pc01>$/m);
  t.match(text, /^\s+<backing-store \/srv\/pc01\.img>\n\s+lun 1\n/m);
  t.match(text, /^\s+incominguser pc01 secretsecret12$/m);
  t.match(text, /^\s+outgoinguser srv01 mutualsecret99$/m);
  t.match(text, /^\s+initiator-name iqn\.2010-04\.org\.ipxe:pc01$/m);
  t.notMatch(text, /ALL/, "never open to every initiator");
  // tgt-admin binds ALL when a target has no initiator-address line (tgt 1.0.85).
  t.match(text, /^\s+initiator-address 0\.0\.0\.0$/m, "an address no TCP peer has");
  t.match(text, /^\s+allow-in-use yes$/m, "shared disks load for every target");
  const back = parseTgtConf(text);
  t.same(back, {
    iqn: spec.iqn,
    luns: [
      { lun: 1, path: "/srv/pc01.img", wwn: "sys-pc01", readOnly: false },
      { lun: 2, path: "/srv/games.img", wwn: "games-0001", readOnly: true },
    ],
    incoming: [{ user: "pc01", password: "secretsecret12" }],
    outgoing: [{ user: "srv01", password: "mutualsecret99" }],
    initiatorNames: ["iqn.2010-04.org.ipxe:pc01"],
    initiatorAddresses: ["0.0.0.0"],
  });
});

t.test("a file with two targets is not one of ours", async (t) => {
  t.equal(parseTgtConf("<target iqn.a:b>\n</target>\n<target iqn.a:c>\n</target>\n"), undefined);
});
