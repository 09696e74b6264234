import t from "tap";
import {
  additionalTargetNames,
  chapSecret,
  chapUsername,
  initiatorIqn,
  iqnSlug,
  machineIdentity,
  targetIqn,
} from "../../src/iscsi/identity.js";
import { isValidInitiatorName, isValidIqn } from "../../src/iscsi/target/validate.js";

const PREFIX = "iqn.2024-01.io.bootfleet";

t.test("a machine name becomes a lowercase IQN part", async (t) => {
  t.equal(iqnSlug("PC 01"), "pc-01");
  t.equal(iqnSlug("--Salle_B/PC.7--"), "salle-b-pc.7");
  t.equal(iqnSlug("???"), "machine", "nothing usable left: a fixed name");
  t.equal(targetIqn(PREFIX, "PC 01"), `${PREFIX}:pc-01`);
  t.ok(isValidIqn(targetIqn(PREFIX, "Ünïcode Café")));
});

t.test("the initiator name follows the MAC, so it survives a rename", async (t) => {
  const name = initiatorIqn(PREFIX, "52:54:00:ab:cd:ef");
  t.equal(name, `${PREFIX}:client-525400abcdef`);
  t.ok(isValidInitiatorName(name));
});

t.test("CHAP user names stay within 64 characters", async (t) => {
  t.equal(chapUsername("pc-01"), "bf-pc-01");
  t.equal(chapUsername("x".repeat(200)).length, 64);
});

t.test("CHAP secrets: 16 characters that never need escaping, not repeated", async (t) => {
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const s = chapSecret();
    t.match(s, /^[A-HJ-NP-Za-km-z2-9]{16}$/);
    seen.add(s);
  }
  t.equal(seen.size, 200);
});

t.test("a machine's identity puts the parts together with a fresh secret", async (t) => {
  const m = { name: "PC-07", mac_address: "52:54:00:00:00:07" };
  const a = machineIdentity(PREFIX, m);
  const b = machineIdentity(PREFIX, m);
  t.same(
    { ...a, chap_password: "" },
    {
      iqn: `${PREFIX}:pc-07`,
      initiator_iqn: `${PREFIX}:client-525400000007`,
      chap_username: "bf-pc-07",
      chap_password: "",
    },
  );
  t.not(a.chap_password, b.chap_password);
});

t.test("a machine's later targets: names of their own that no first target can have", async (t) => {
  const first = machineIdentity(PREFIX, { name: "PC-07", mac_address: "52:54:00:00:00:07" });
  const second = additionalTargetNames(first, 12);
  t.same(second, { iqn: `${PREFIX}:pc-07:t12`, chap_username: "bf-pc-07_t12" });
  t.ok(isValidIqn(second.iqn), "a valid IQN");
  t.match(second.chap_username, /^[A-Za-z0-9._:-]{1,64}$/, "a CHAP user tgt and LIO take");
  // A machine named like the suffixed name maps to other names: ":" and "_" are not in slugs.
  const lookalike = machineIdentity(PREFIX, {
    name: "pc-07:t12",
    mac_address: "52:54:00:00:00:08",
  });
  t.not(lookalike.iqn, second.iqn);
  const lookalikeUser = machineIdentity(PREFIX, {
    name: "pc-07_t12",
    mac_address: "52:54:00:00:00:09",
  });
  t.not(lookalikeUser.chap_username, second.chap_username);
  const long = additionalTargetNames(
    machineIdentity(PREFIX, { name: "x".repeat(64), mac_address: "52:54:00:00:00:0a" }),
    123456,
  );
  t.equal(long.chap_username.length, 64, "a long name is cut, never the suffix");
  t.match(long.chap_username, /_t123456$/);
});
