import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import t, { type Test } from "tap";
import { LioDriver } from "../../../src/iscsi/target/lio.js";
import {
  applyToConfigfs,
  parseAclInfo,
  readConfigfsSessions,
  removeFromConfigfs,
} from "../../../src/iscsi/target/lio-configfs.js";
import type { TargetSpec } from "../../../src/iscsi/target/types.js";
import { FakeConfigFs } from "../../fixtures/iscsi/fake-configfs.js";

// This machine's kernel has no LIO: these run against a temp folder laid out like
// configfs (see FakeConfigFs). The real proof is a Debian guest with LIO.

const PREFIX = "iqn.2026-11.lan.bootfleet";

function specA(): TargetSpec {
  return {
    iqn: `${PREFIX}:pc01`,
    portal: { address: "10.99.0.1", port: 3260 },
    luns: [
      {
        lun: 0,
        path: "/var/lib/bootfleet/overlays/pc01.img",
        kind: "file",
        readOnly: false,
        sizeBytes: 64 * 2 ** 20,
        wwn: "0b6f7c1e-3d2a-4f5b-9c8d-7e6f5a4b3c2d",
      },
      {
        lun: 1,
        path: "/dev/vg0/games",
        kind: "block",
        readOnly: true,
        sizeBytes: 2 ** 30,
        wwn: "games-0001",
      },
    ],
    acl: {
      initiatorIqn: "iqn.2010-04.org.ipxe:pc01",
      chapUser: "pc01",
      chapPassword: "pc01Secret.42",
    },
  };
}

function otherSpec(): TargetSpec {
  return {
    iqn: "iqn.2003-01.org.example:other",
    portal: { address: "10.99.0.1", port: 3260 },
    luns: [
      {
        lun: 0,
        path: "/srv/other.img",
        kind: "file",
        readOnly: false,
        sizeBytes: 2 ** 20,
        wwn: "other-0001",
      },
    ],
    acl: {
      initiatorIqn: "iqn.2010-04.org.ipxe:other",
      chapUser: "other",
      chapPassword: "otherSecret.1",
    },
  };
}

async function setup(t: Test) {
  const root = await mkdtemp(join(tmpdir(), `bf-iscsi-cfs-${process.pid}-`));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const fs = await FakeConfigFs.create(root);
  await applyToConfigfs(fs, root, otherSpec());
  const otherBefore = await fs.snapshot(`iscsi/${otherSpec().iqn}`);
  const coreBefore = await fs.snapshot("core");
  fs.log.length = 0;
  return { root, fs, otherBefore, coreBefore };
}

const mutating = (fs: FakeConfigFs) => fs.log.filter((e) => e.op !== "read");

t.test(
  "apply writes configfs in the order LIO needs (temp folder laid out like configfs)",
  async (t) => {
    const { root, fs } = await setup(t);
    const s = specA();
    await applyToConfigfs(fs, root, s);
    const log = fs.log;
    const at = (pred: (e: (typeof log)[number]) => boolean, what: string) => {
      const i = log.findIndex(pred);
      t.ok(i >= 0, `${what} happened`);
      return i;
    };

    const fileCtl = at(
      (e) =>
        e.op === "write" &&
        e.path.endsWith("bf-pc01-lun0/control") &&
        e.value?.startsWith("fd_dev_name") === true,
      "fileio control",
    );
    // target_core_file.c parses exactly these two tokens.
    t.equal(
      log[fileCtl]?.value,
      `fd_dev_name=${s.luns[0]?.path},fd_dev_size=${s.luns[0]?.sizeBytes}`,
    );
    const fileEnable = at(
      (e) => e.op === "write" && e.path.endsWith("bf-pc01-lun0/enable"),
      "fileio enable",
    );
    const fileSerial = at(
      (e) => e.op === "write" && e.path.endsWith("bf-pc01-lun0/wwn/vpd_unit_serial"),
      "fileio serial",
    );
    t.ok(fileCtl < fileEnable && fileEnable < fileSerial, "control, then enable, then the serial");
    const blkCtl = at(
      (e) =>
        e.op === "write" &&
        e.path.endsWith("bf-pc01-lun1/control") &&
        e.value === `udev_path=${s.luns[1]?.path}`,
      "iblock control",
    );
    const blkRo = at(
      (e) =>
        e.op === "write" && e.path.endsWith("bf-pc01-lun1/control") && e.value === "readonly=1",
      "iblock readonly",
    );
    const blkEnable = at(
      (e) => e.op === "write" && e.path.endsWith("bf-pc01-lun1/enable"),
      "iblock enable",
    );
    t.ok(blkCtl < blkEnable && blkRo < blkEnable, "iblock configured before enable");

    const tpgMk = at((e) => e.op === "mkdir" && e.path.endsWith(":pc01/tpgt_1"), "tpgt_1");
    const tgtMk = at((e) => e.op === "mkdir" && e.path === `iscsi/${s.iqn}`, "target");
    t.ok(tgtMk < tpgMk);
    at((e) => e.op === "mkdir" && e.path.endsWith("tpgt_1/np/10.99.0.1:3260"), "portal");
    const lunLink = at(
      (e) => e.op === "symlink" && e.path.includes("tpgt_1/lun/lun_0/"),
      "lun_0 link",
    );
    t.ok(fileEnable < lunLink, "a LUN links to an enabled backstore");
    const userid = at((e) => e.op === "write" && e.path.endsWith("/auth/userid"), "chap user");
    const password = at(
      (e) => e.op === "write" && e.path.endsWith("/auth/password"),
      "chap password",
    );
    const mapped = at(
      (e) => e.op === "mkdir" && /acls\/[^/]+\/lun_0$/.test(e.path),
      "mapped lun_0",
    );
    t.ok(userid < mapped && password < mapped, "CHAP set before the ACL maps a LUN");
    const mappedLink = at(
      (e) => e.op === "symlink" && /acls\/[^/]+\/lun_0\//.test(e.path),
      "mapped link",
    );
    t.equal(
      log[mappedLink]?.value,
      `iscsi/${s.iqn}/tpgt_1/lun/lun_0`,
      "mapped LUN links to the TPG LUN",
    );
    const auth = at(
      (e) => e.op === "write" && e.path.endsWith("attrib/authentication") && e.value === "1",
      "authentication=1",
    );
    const demo = at(
      (e) => e.op === "write" && e.path.endsWith("attrib/generate_node_acls") && e.value === "0",
      "generate_node_acls=0",
    );
    const enable = at(
      (e) => e.op === "write" && e.path.endsWith("tpgt_1/enable") && e.value === "1",
      "tpg enable",
    );
    t.ok(auth < enable && demo < enable, "closed before it is enabled");
    t.equal(enable, log.length - 1, "enable is the very last write");

    const tpg = join(root, "iscsi", s.iqn, "tpgt_1");
    t.equal(
      (
        await readFile(join(tpg, "acls", s.acl.initiatorIqn, "lun_1", "write_protect"), "utf8")
      ).trim(),
      "1",
      "games disk write-protected",
    );
    t.equal(
      (
        await readFile(join(tpg, "acls", s.acl.initiatorIqn, "lun_0", "write_protect"), "utf8")
      ).trim(),
      "0",
    );
    t.equal((await readFile(join(tpg, "param", "AuthMethod"), "utf8")).trim(), "CHAP");
  },
);

t.test("applying the same spec again writes nothing", async (t) => {
  const { root, fs } = await setup(t);
  await applyToConfigfs(fs, root, specA());
  fs.log.length = 0;
  const changes = await applyToConfigfs(fs, root, specA());
  t.same(changes, []);
  t.same(
    mutating(fs).filter((e) => e.op !== "read"),
    [],
    "no mkdir, write, link or rmdir",
  );
});

t.test(
  "changing password and LUNs under a live session keeps the ACL and other targets",
  async (t) => {
    const { root, fs, otherBefore, coreBefore } = await setup(t);
    const s = specA();
    await applyToConfigfs(fs, root, s);
    const aclDir = join(root, "iscsi", s.iqn, "tpgt_1", "acls", s.acl.initiatorIqn);
    await fs.fakeSession(aclDir, s.acl.initiatorIqn, "10.99.0.57");
    t.same(await readConfigfsSessions(fs, root, s.iqn), [
      { initiatorIqn: s.acl.initiatorIqn, address: "10.99.0.57" },
    ]);
    fs.log.length = 0;

    const changed: TargetSpec = {
      ...s,
      luns: [
        s.luns[0]!,
        {
          lun: 2,
          path: "/var/lib/bootfleet/overlays/pc01-data.img",
          kind: "file",
          readOnly: false,
          sizeBytes: 2 ** 20,
          wwn: "data-pc01",
        },
      ],
      acl: {
        ...s.acl,
        chapPassword: "pc01Secret.NEW",
        mutualUser: "bootfleet",
        mutualPassword: "srvSecret.43",
      },
    };
    const changes = await applyToConfigfs(fs, root, changed);
    t.notOk(
      fs.log.some((e) => e.op === "rmdir" && e.path.endsWith(s.acl.initiatorIqn)),
      "the ACL (and its session) stays",
    );
    t.same(await readConfigfsSessions(fs, root, s.iqn), [
      { initiatorIqn: s.acl.initiatorIqn, address: "10.99.0.57" },
    ]);
    t.equal((await readFile(join(aclDir, "auth", "password"), "utf8")).trim(), "pc01Secret.NEW");
    t.equal((await readFile(join(aclDir, "auth", "userid_mutual"), "utf8")).trim(), "bootfleet");
    t.notOk(changes.join(" ").includes("Secret"), "no secret in the change list");
    const core = Object.keys(await fs.snapshot("core"));
    t.notOk(
      core.some((p) => p.endsWith("/bf-pc01-lun1")),
      "the games backstore went with its LUN",
    );
    t.ok(
      core.some((p) => p.endsWith("/bf-pc01-lun2")),
      "the new data disk has one",
    );
    t.same(await fs.snapshot(`iscsi/${otherSpec().iqn}`), otherBefore, "other target untouched");
    const coreNow = await fs.snapshot("core");
    for (const [k, v] of Object.entries(coreBefore))
      t.equal(coreNow[k], v, `other backstore ${k} untouched`);

    // Dropping mutual CHAP clears it the way the kernel expects.
    await applyToConfigfs(fs, root, {
      ...changed,
      acl: { ...changed.acl, mutualUser: undefined, mutualPassword: undefined },
    });
    t.equal((await readFile(join(aclDir, "auth", "userid_mutual"), "utf8")).trim(), "NULL");
  },
);

t.test("a new wwn or device for a LUN rebuilds its backstore", async (t) => {
  const { root, fs } = await setup(t);
  const s = specA();
  await applyToConfigfs(fs, root, s);
  const moved = {
    ...s,
    luns: [{ ...s.luns[0]!, path: "/var/lib/bootfleet/overlays/pc01-v2.img" }, s.luns[1]!],
  };
  await applyToConfigfs(fs, root, moved);
  const core = await fs.snapshot("core");
  const udev = Object.entries(core).find(([k]) => k.endsWith("bf-pc01-lun0/udev_path"));
  t.equal(udev?.[1].trim(), "/var/lib/bootfleet/overlays/pc01-v2.img");
  t.same(await applyToConfigfs(fs, root, moved), [], "and is stable afterwards");
});

t.test("a new initiator replaces the ACL", async (t) => {
  const { root, fs } = await setup(t);
  const s = specA();
  await applyToConfigfs(fs, root, s);
  await applyToConfigfs(fs, root, {
    ...s,
    acl: { ...s.acl, initiatorIqn: "iqn.1991-05.com.microsoft:pc01" },
  });
  const acls = Object.keys(await fs.snapshot(`iscsi/${s.iqn}/tpgt_1/acls`)).filter(
    (k) => k.split("/").length === 5,
  );
  t.same(acls, [`iscsi/${s.iqn}/tpgt_1/acls/iqn.1991-05.com.microsoft:pc01`]);
});

t.test("remove takes only its own target and backstores", async (t) => {
  const { root, fs, otherBefore, coreBefore } = await setup(t);
  await applyToConfigfs(fs, root, specA());
  t.ok(await removeFromConfigfs(fs, root, specA().iqn));
  t.same(await fs.snapshot(`iscsi/${specA().iqn}`), {}, "target gone");
  t.same(await fs.snapshot("core"), coreBefore, "only the other target's backstores are left");
  t.same(await fs.snapshot(`iscsi/${otherSpec().iqn}`), otherBefore, "other target untouched");
  t.notOk(await removeFromConfigfs(fs, root, specA().iqn), "absent: nothing to do");
});

t.test("ACL info as the kernel prints it", async (t) => {
  t.equal(
    parseAclInfo("No active iSCSI Session for Initiator Endpoint: iqn.2010-04.org.ipxe:pc01\n"),
    undefined,
  );
  t.same(
    parseAclInfo(
      "InitiatorName: iqn.2010-04.org.ipxe:pc01\nInitiatorAlias: \nCID: 1  Connection State: TARG_CONN_STATE_LOGGED_IN\n   Address fd00::57 TCP  StatSN: 0x1\n",
    ),
    { initiatorIqn: "iqn.2010-04.org.ipxe:pc01", address: "fd00::57" },
  );
});

t.test(
  "LioDriver: configfs, then saveconfig.json; refuses to remove a booted machine",
  async (t) => {
    const { root, fs } = await setup(t);
    const save = join(root, "..", `bf-iscsi-cfs-save-${process.pid}.json`);
    t.teardown(() => rm(save, { force: true }));
    const lines: string[] = [];
    const logger = pino({ level: "debug" }, { write: (s: string) => void lines.push(s) });
    const d = new LioDriver({
      iqnPrefix: PREFIX,
      logger,
      configfsRoot: root,
      saveconfigPath: save,
      fs,
    });
    t.equal(d.firstLun, 0);
    await t.rejects(d.apply({ ...specA(), iqn: "iqn.2003-01.org.example:x" }), /not under/);
    await t.rejects(
      d.apply({ ...specA(), acl: { ...specA().acl, chapPassword: "short" } }),
      /chapPassword/,
    );
    await d.apply(specA());
    const saved = JSON.parse(await readFile(save, "utf8"));
    t.same(
      saved.targets.map((x: { wwn: string }) => x.wwn),
      [specA().iqn],
      "persisted",
    );
    t.same(await d.list(), [specA().iqn], "only bootfleet's prefix listed");

    const aclDir = join(root, "iscsi", specA().iqn, "tpgt_1", "acls", specA().acl.initiatorIqn);
    await fs.fakeSession(aclDir, specA().acl.initiatorIqn, "10.99.0.57");
    await t.rejects(d.remove(specA().iqn), /logged-in sessions \(iqn\.2010-04\.org\.ipxe:pc01\)/);
    t.ok(await fs.isDir(aclDir), "still there");
    await d.remove(specA().iqn, { force: true });
    t.same(await d.list(), []);
    t.notMatch(lines.join(""), /pc01Secret/, "no secret in the log");
  },
);

t.test("thin provisioning is asked only of a device that can discard", async (t) => {
  // The kernel answers emulate_tpu=1 with ENOSYS on a block device whose queue cannot
  // discard (a dm-snapshot), which failed the whole target in the Debian guest.
  const { root, fs } = await setup(t);
  await applyToConfigfs(fs, root, specA());
  const tpu = () => fs.log.filter((e) => e.op === "write" && e.path.endsWith("attrib/emulate_tpu"));
  t.same(
    tpu().map((e) => e.value),
    ["1"],
    "the file LUN gets thin provisioning, the snapshot-like block LUN is left without",
  );

  const { root: root2, fs: fs2 } = await setup(t);
  fs2.canDiscard.add("/dev/vg0/games");
  await applyToConfigfs(fs2, root2, specA());
  t.equal(
    fs2.log.filter((e) => e.op === "write" && e.path.endsWith("attrib/emulate_tpu")).length,
    2,
    "a block device that can discard (a thin LV) gets it too",
  );
});
