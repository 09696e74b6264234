import t from "tap";
import type { TargetSpec } from "../../../src/iscsi/target/types.js";
import {
  isUnderPrefix,
  isValidInitiatorName,
  isValidIqn,
  isValidIqnPrefix,
  specProblems,
} from "../../../src/iscsi/target/validate.js";

const PREFIX = "iqn.2026-11.lan.bootfleet";

export function goodSpec(): TargetSpec {
  return {
    iqn: `${PREFIX}:pc01`,
    portal: { address: "10.99.0.1", port: 3260 },
    luns: [
      {
        lun: 1,
        path: "/var/lib/bootfleet/overlays/pc01.img",
        kind: "file",
        readOnly: false,
        sizeBytes: 64 * 1024 * 1024,
        wwn: "0b6f7c1e-3d2a-4f5b-9c8d-7e6f5a4b3c2d",
      },
    ],
    acl: {
      initiatorIqn: "iqn.2010-04.org.ipxe:pc01",
      chapUser: "pc01",
      chapPassword: "Zq3.x_9-Lm2+",
    },
  };
}

t.test("IQN prefixes follow RFC 3720's iqn. form", async (t) => {
  t.ok(isValidIqnPrefix(PREFIX));
  t.notOk(isValidIqnPrefix("iqn.2026-13.lan.x"), "month 13");
  t.notOk(isValidIqnPrefix("eui.0123456789abcdef"));
  t.notOk(isValidIqnPrefix(`${PREFIX}:pc-01`), "a prefix has no name part");
});

t.test("names", async (t) => {
  t.ok(isValidIqn("iqn.1991-05.com.microsoft:desktop-7"));
  t.notOk(isValidIqn("iqn.1991-05.com.microsoft:Desktop"));
  t.ok(isValidInitiatorName("eui.02004567A425678D"), "RFC 3720 eui. example");
  t.ok(isValidInitiatorName("naa.52004567BA64678D"));
  t.notOk(isValidInitiatorName("ALL"), "tgt's wildcard is never an initiator name");
  t.ok(isUnderPrefix(`${PREFIX}:pc01`, PREFIX));
  t.notOk(isUnderPrefix(`${PREFIX}x:pc01`, PREFIX), "a longer prefix is another prefix");
});

t.test("a good spec has no problems; each bad field is named", async (t) => {
  t.same(specProblems(goodSpec(), 1), []);
  const cases: [string, (s: TargetSpec) => void, RegExp][] = [
    [
      "lun 0 on tgt",
      (s) => {
        s.luns[0]!.lun = 0;
      },
      /lun 0: number/,
    ],
    [
      "comma in path",
      (s) => {
        s.luns[0]!.path = "/x,fd_dev_size=1";
      },
      /path/,
    ],
    [
      "relative path",
      (s) => {
        s.luns[0]!.path = "x.img";
      },
      /path/,
    ],
    [
      "dot-dot path",
      (s) => {
        s.luns[0]!.path = "/a/../etc/shadow";
      },
      /path/,
    ],
    [
      "size not sector",
      (s) => {
        s.luns[0]!.sizeBytes = 1000;
      },
      /sizeBytes/,
    ],
    [
      "long wwn",
      (s) => {
        s.luns[0]!.wwn = "a".repeat(37);
      },
      /wwn/,
    ],
    [
      "no luns",
      (s) => {
        s.luns = [];
      },
      /no LUNs/,
    ],
    [
      "hostname portal",
      (s) => {
        s.portal.address = "boot.lan";
      },
      /portal address/,
    ],
    [
      "port 0",
      (s) => {
        s.portal.port = 0;
      },
      /portal port/,
    ],
    [
      "short secret",
      (s) => {
        s.acl.chapPassword = "short";
      },
      /chapPassword/,
    ],
    [
      "space in secret",
      (s) => {
        s.acl.chapPassword = "twelve chars!";
      },
      /chapPassword/,
    ],
    [
      "mutual half",
      (s) => {
        s.acl.mutualUser = "srv";
      },
      /go together/,
    ],
    [
      "mutual same secret",
      (s) => {
        s.acl.mutualUser = "srv";
        s.acl.mutualPassword = s.acl.chapPassword;
      },
      /must differ/,
    ],
    [
      "initiator ALL",
      (s) => {
        s.acl.initiatorIqn = "ALL";
      },
      /initiator/,
    ],
  ];
  for (const [name, mutate, re] of cases) {
    const s = goodSpec();
    mutate(s);
    const p = specProblems(s, 1);
    t.match(p.join("\n"), re, name);
    t.notMatch(p.join("\n"), s.acl.chapPassword, `${name}: no secret in the problem text`);
  }
  const dup = goodSpec();
  dup.luns.push({ ...dup.luns[0]! });
  t.match(specProblems(dup, 1).join(), /appears twice/);
  const lio = goodSpec();
  lio.luns[0]!.lun = 0;
  t.same(specProblems(lio, 0), [], "LUN 0 is fine for LIO");
});
