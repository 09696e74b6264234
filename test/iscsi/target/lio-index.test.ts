import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import t, { type Test } from "tap";
import { LioDriver } from "../../../src/iscsi/target/lio.js";
import { applyToConfigfs, type ConfigFs } from "../../../src/iscsi/target/lio-configfs.js";
import { ConfigfsIndex } from "../../../src/iscsi/target/lio-index.js";
import type { TargetSpec } from "../../../src/iscsi/target/types.js";
import { FakeConfigFs } from "../../fixtures/iscsi/fake-configfs.js";

// Removal and apply must not walk every other target (issue #13: removing 200 targets one by
// one took over 16 minutes in the Debian guest). Counted, not timed: every configfs
// operation goes through a counter, and a removal or an apply with 100 targets present must
// cost exactly what it costs with 10.

const PREFIX = "iqn.2026-11.lan.bootfleet";

function spec(i: number): TargetSpec {
  const n = String(i).padStart(3, "0");
  return {
    iqn: `${PREFIX}:pc${n}`,
    portal: { address: "10.99.0.1", port: 3260 },
    luns: [
      {
        lun: 0,
        path: `/var/lib/bootfleet/overlays/pc${n}.img`,
        kind: "file",
        readOnly: false,
        sizeBytes: 2 ** 20,
        wwn: `wwn-pc${n}`,
      },
    ],
    acl: {
      initiatorIqn: `iqn.2010-04.org.ipxe:pc${n}`,
      chapUser: `pc${n}`,
      chapPassword: `pc${n}Secret.42`,
    },
  };
}

/** Counts every configfs operation (reads, listings and stats included). */
function counting(fs: ConfigFs) {
  const c = { ops: 0 };
  const wrapped = Object.fromEntries(
    (
      [
        "mkdir",
        "write",
        "read",
        "symlink",
        "readlink",
        "readdir",
        "rmdir",
        "unlink",
        "isDir",
        "isLink",
      ] as const
    ).map((op) => [
      op,
      (...a: string[]) => {
        c.ops++;
        return (fs[op] as (...x: string[]) => Promise<unknown>)(...a);
      },
    ]),
  ) as unknown as ConfigFs;
  return { c, fs: wrapped };
}

async function room(t: Test, n: number) {
  const root = await mkdtemp(join(tmpdir(), `bf-lio-index-${process.pid}-`));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const fake = await FakeConfigFs.create(root);
  const setupIndex = new ConfigfsIndex(fake, root);
  for (let i = 1; i <= n; i++) await applyToConfigfs(fake, root, spec(i), setupIndex);
  const save = join(root, "..", `bf-lio-index-save-${process.pid}-${n}.json`);
  t.teardown(() => rm(save, { force: true }));
  const { c, fs } = counting(fake);
  // A new driver over what configfs holds: a restarted daemon adopting it.
  const d = new LioDriver({
    iqnPrefix: PREFIX,
    logger: pino({ level: "silent" }),
    configfsRoot: root,
    saveconfigPath: save,
    fs,
  });
  const objects = async () =>
    Object.keys(await fake.snapshot("core"))
      .filter((k) => /^core\/fileio_\d+\/bf-[^/]+$/.test(k))
      .sort();
  return { root, fake, c, d, objects };
}

async function costs(t: Test, n: number) {
  const { c, d, objects } = await room(t, n);
  c.ops = 0;
  await d.remove(spec(1).iqn);
  const firstRemove = c.ops;
  c.ops = 0;
  await d.remove(spec(2).iqn);
  const remove = c.ops;
  c.ops = 0;
  await d.apply(spec(999));
  const apply = c.ops;
  c.ops = 0;
  await d.apply(spec(999));
  const reapply = c.ops;
  const left = await objects();
  return { firstRemove, remove, apply, reapply, left };
}

t.test("a removal or an apply costs the same with 100 targets present as with 10", async (t) => {
  // 100, not 200: the fake itself walks every target on some operations, so building the
  // room is O(N^2) here; equal counts at 10 and 100 show the same as at 200.
  const small = await costs(t, 10);
  const big = await costs(t, 100);
  t.ok(
    big.firstRemove > small.firstRemove,
    `the first call after a restart reads configfs once (${small.firstRemove} / ${big.firstRemove} operations)`,
  );
  t.equal(big.remove, small.remove, `the next removal: ${small.remove} configfs operations`);
  t.ok(big.remove < 60, "and that is a handful, not a walk");
  t.equal(big.apply, small.apply, `a new target: ${small.apply} configfs operations`);
  t.equal(big.reapply, small.reapply, `an unchanged target: ${small.reapply} configfs operations`);

  // The removed targets' objects went, every other one stayed, and the new target took the
  // lowest free HBA number (pc001's, freed first), as it would have without the index.
  t.equal(big.left.length, 100 - 2 + 1, "objects left");
  t.notOk(
    big.left.some((k) => k.endsWith("/bf-pc001-lun0") || k.endsWith("/bf-pc002-lun0")),
    "removed targets' objects freed",
  );
  t.ok(big.left.includes("core/fileio_0/bf-pc999-lun0"), "new object in the lowest free HBA");
});

t.test(
  "an object another target still exports is kept, even one linked behind the driver's back",
  async (t) => {
    const { root, fake, d } = await room(t, 3);
    await d.apply(spec(4)); // the index is built and kept from here
    // Another tool (targetcli) exports pc001's object from a target of its own.
    const other = join(root, "iscsi", "iqn.2003-01.org.example:shared", "tpgt_1");
    await fake.mkdir(join(root, "iscsi", "iqn.2003-01.org.example:shared"));
    await fake.mkdir(other);
    await fake.mkdir(join(other, "lun", "lun_0"));
    const so = join(root, "core", "fileio_0", "bf-pc001-lun0");
    t.ok(await fake.isDir(so), "pc001's object is where the test expects");
    await fake.symlink(so, join(other, "lun", "lun_0", "x"));

    await d.remove(spec(1).iqn);
    t.notOk(await fake.isDir(join(root, "iscsi", spec(1).iqn)), "the target went");
    t.ok(await fake.isDir(so), "its object stayed: the other target still exports it");

    // And once that target lets go, the next removal that frees an object sees it as free.
    await fake.unlink(join(other, "lun", "lun_0", "x"));
    await d.remove(spec(2).iqn);
    t.notOk(
      await fake.isDir(join(root, "core", "fileio_1", "bf-pc002-lun0")),
      "an object no one exports goes",
    );
  },
);

t.test("a target removed behind the driver's back is noticed before the next apply", async (t) => {
  const { root, fake, d } = await room(t, 3);
  await d.apply(spec(4));
  // targetcli deletes pc002 and its object (and HBA), as `/iscsi delete` + `/backstores ... delete`.
  const tpg = join(root, "iscsi", spec(2).iqn, "tpgt_1");
  const acl = join(tpg, "acls", spec(2).acl.initiatorIqn);
  for (const e of await fake.readdir(join(acl, "lun_0")))
    if (await fake.isLink(join(acl, "lun_0", e))) await fake.unlink(join(acl, "lun_0", e));
  await fake.rmdir(join(acl, "lun_0"));
  await fake.rmdir(acl);
  for (const e of await fake.readdir(join(tpg, "lun", "lun_0")))
    if (await fake.isLink(join(tpg, "lun", "lun_0", e)))
      await fake.unlink(join(tpg, "lun", "lun_0", e));
  await fake.rmdir(join(tpg, "lun", "lun_0"));
  await fake.rmdir(join(tpg, "np", "10.99.0.1:3260"));
  await fake.rmdir(tpg);
  await fake.rmdir(join(root, "iscsi", spec(2).iqn));
  await fake.rmdir(join(root, "core", "fileio_1", "bf-pc002-lun0"));
  await fake.rmdir(join(root, "core", "fileio_1"));

  // Applied again, pc002 gets a new object (the index no longer claims the old one) in the
  // HBA number that became free.
  await d.apply(spec(2));
  t.ok(
    await fake.isDir(join(root, "core", "fileio_1", "bf-pc002-lun0")),
    "a new object in the freed HBA",
  );
  t.ok(
    await fake.isDir(join(root, "iscsi", spec(2).iqn, "tpgt_1", "lun", "lun_0")),
    "exported again",
  );
});
