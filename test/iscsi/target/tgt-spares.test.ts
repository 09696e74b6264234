import { pino } from "pino";
import t, { type Test } from "tap";
import { TGT_GUARD_USER, TgtDriver } from "../../../src/iscsi/target/tgt.js";
import { parseTgtShowAccounts, parseTgtShowTargets } from "../../../src/iscsi/target/tgt-show.js";
import { alternateUser, SpareAccounts } from "../../../src/iscsi/target/tgt-spares.js";
import { tgtdManager } from "../../../src/iscsi/target/tgtd-ipc.js";
import type { TargetSpec } from "../../../src/iscsi/target/types.js";
import { readCapacity, TestTgtd, tgtScratch } from "../../fixtures/iscsi/tgtd.js";

// A boot's new CHAP secret on tgt from a spare account made ahead (tgt-spares.ts): two
// requests on the boot's path (unbind the last boot's account, bind the spare), the costly
// delete and the next spare made once tgtd is quiet. Real tgtd, real CHAP logins (libiscsi).

const MiB = 1024 * 1024;
const PREFIX = "iqn.2026-11.lan.bootfleet";
const notRoot = process.getuid?.() !== 0;

t.test("alternateUser: two names per target, each the other's", async (t) => {
  t.equal(alternateUser("bf-pc-1"), "bf-pc-1:b");
  t.equal(alternateUser("bf-pc-1:b"), "bf-pc-1");
  t.equal(alternateUser(alternateUser("x_t5")), "x_t5");
});

t.test("spares wait for quiet; a round that fails says so once", async (t) => {
  const lines: { level: number; msg: string; failed?: number; made?: number }[] = [];
  const logger = pino({ level: "debug" }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  const made: { iqn: string; at: number }[] = [];
  let failing = false;
  const spares = new SpareAccounts({
    quietMs: 120,
    logger,
    make: async (iqn) => {
      if (failing) throw new Error("connect ENOENT /var/run/tgtd/socket.0");
      made.push({ iqn, at: Date.now() });
      return true;
    },
  });
  t.teardown(() => spares.close());
  const start = Date.now();
  spares.busy();
  spares.want("a");
  spares.want("b");
  // Changes keep coming for 300 ms: nothing is made meanwhile.
  for (let i = 0; i < 6; i++) {
    await new Promise((r) => setTimeout(r, 50));
    spares.busy();
  }
  t.same(made, [], "nothing made while changes keep coming");
  const lastBusy = Date.now();
  await new Promise((r) => setTimeout(r, 400));
  t.same(
    made.map((m) => m.iqn),
    ["a", "b"],
    "both made once quiet",
  );
  t.ok(made[0]!.at - lastBusy >= 110, `made ${made[0]!.at - lastBusy} ms after the last change`);
  t.ok(made[0]!.at - start >= 400, "not before");

  failing = true;
  for (const iqn of ["c", "d", "e"]) spares.want(iqn);
  await new Promise((r) => setTimeout(r, 400));
  const warns = lines.filter((l) => l.level === 40);
  t.equal(warns.length, 1, "one warning for the round");
  t.match(warns[0], { failed: 3, made: 0, err: /ENOENT/ });
});

t.test(
  "spare accounts against a real tgtd",
  { skip: notRoot ? "needs root: starts tgtd" : false },
  async (t) => {
    const scratch = await tgtScratch(t, "tgt-spares", 16 * MiB);
    if (!scratch) return;
    const { confDir, disk } = scratch;
    const tgtd = await TestTgtd.start();
    t.teardown(() => tgtd.stop());
    const logLines: string[] = [];
    const logger = pino({ level: "debug" }, { write: (s: string) => void logLines.push(s) });
    const commands: string[][] = [];
    const real = tgtdManager(tgtd.controlPort);
    let n = 0;
    const driver = new TgtDriver({
      iqnPrefix: PREFIX,
      confDir,
      controlPort: tgtd.controlPort,
      logger,
      manage: (args) => {
        commands.push([...args]);
        return real(args);
      },
      spareSecret: () => `spareSecret${String(++n).padStart(5, "0")}`,
      spareQuietMs: 150,
    });
    t.teardown(() => driver.close());

    const spec: TargetSpec = {
      iqn: `${PREFIX}:pc-s`,
      portal: { address: "127.0.0.1", port: tgtd.portalPort },
      luns: [
        { lun: 1, path: disk, kind: "file", readOnly: false, sizeBytes: 16 * MiB, wwn: "s-1" },
      ],
      acl: {
        initiatorIqn: "iqn.2010-04.org.ipxe:pc-s",
        chapUser: "pcs",
        chapPassword: "pcsFirst.0001",
      },
    };
    const login = (user: string, password: string) =>
      readCapacity({
        portalPort: tgtd.portalPort,
        iqn: spec.iqn,
        lun: 1,
        initiator: spec.acl.initiatorIqn,
        user,
        password,
      });
    const accounts = async () =>
      parseTgtShowAccounts((await tgtd.tgtadm(["--op", "show", "--mode", "account"])).stdout);
    const target = async (iqn = spec.iqn) =>
      parseTgtShowTargets((await tgtd.tgtadm(["--op", "show", "--mode", "target"])).stdout).find(
        (x) => x.iqn === iqn,
      );
    /** A request of the test's own to tgtd (options as one string, then the last value). */
    const tgtadmOk = async (t: Test, options: string, last: string) => {
      const args = [...options.split(" "), last];
      t.equal((await tgtd.tgtadm(args)).code, 0, `tgtadm ${options} ${last}`);
    };
    /** The spare once the driver made it (it waits for tgtd to be quiet). */
    const spareFor = async (iqn: string, user: string) => {
      for (let i = 0; i < 100; i++) {
        const s = driver.readySecret(iqn, user);
        if (s) return s;
        await new Promise((r) => setTimeout(r, 50));
      }
      return undefined;
    };

    await driver.apply(spec);
    t.equal(
      (await login("pcs", "pcsFirst.0001")).size,
      16 * MiB,
      "the first boot's secret opens it",
    );
    t.equal(driver.readySecret(spec.iqn, "pcs"), undefined, "no spare while tgtd is not quiet");

    const spare1 = await spareFor(spec.iqn, "pcs");
    t.equal(spare1?.user, "pcs:b", "the spare takes the target's other name");
    t.ok((await accounts()).includes("pcs:b"), "tgtd has the spare account");
    t.same((await target())?.incomingUsers, [TGT_GUARD_USER, "pcs"], "the spare is bound nowhere");
    t.equal(
      (await login("pcs:b", spare1!.password)).size,
      undefined,
      "the spare opens nothing before a boot takes it",
    );
    t.equal(driver.readySecret(spec.iqn, "someone-else"), undefined, "only for the user in force");

    await t.test(
      "a boot takes the spare: 2 requests, the last boot's secret opens nothing",
      async (t) => {
        commands.length = 0;
        await driver.apply({
          ...spec,
          acl: { ...spec.acl, chapUser: spare1!.user, chapPassword: spare1!.password },
        });
        t.same(
          commands.map((c) => `${c[1]} ${c[3]} ${c.at(-1)}`),
          ["unbind account pcs", "bind account pcs:b"],
          "unbind the last boot's account, bind the spare: no delete, no listing",
        );
        t.equal(
          (await login("pcs:b", spare1!.password)).size,
          16 * MiB,
          "the spare's secret opens it",
        );
        const old = await login("pcs", "pcsFirst.0001");
        t.equal(old.size, undefined, "the last boot's secret opens nothing");
        t.match(old.output, /Authentication failure/);
        t.same(
          (await target())?.incomingUsers,
          [TGT_GUARD_USER, "pcs:b"],
          "guard first, no empty slot",
        );
        await driver.settled(spec.iqn);
      },
    );

    await t.test("once tgtd is quiet: the old account deleted, the next spare made", async (t) => {
      commands.length = 0;
      const spare2 = await spareFor(spec.iqn, "pcs:b");
      t.equal(spare2?.user, "pcs", "the next spare takes the first name again");
      t.not(spare2?.password, "pcsFirst.0001", "with a new secret");
      t.same(
        commands.map((c) => `${c[1]} ${c[3]}`),
        ["delete account", "new account"],
        "the costly delete here, off the boot's path",
      );
      t.equal(
        (await login("pcs", spare2!.password)).size,
        undefined,
        "the new spare opens nothing yet",
      );
      t.equal((await login("pcs", "pcsFirst.0001")).size, undefined, "nor the first boot's secret");

      // The next boot takes it back.
      await driver.apply({
        ...spec,
        acl: { ...spec.acl, chapUser: "pcs", chapPassword: spare2!.password },
      });
      t.equal((await login("pcs", spare2!.password)).size, 16 * MiB, "the second spare opens it");
      t.equal(
        (await login("pcs:b", spare1!.password)).size,
        undefined,
        "the boot before opens nothing",
      );
    });

    await t.test("the tid given to another target behind the driver's back", async (t) => {
      const spare = await spareFor(spec.iqn, "pcs");
      const tid = (await target())!.tid;
      await tgtadmOk(t, "--op delete --mode target --force --tid", `${tid}`);
      const foreign = "iqn.2000-01.com.example:took-the-tid";
      await tgtadmOk(t, `--op new --mode target --tid ${tid} --targetname`, foreign);
      await driver.apply({
        ...spec,
        acl: { ...spec.acl, chapUser: spare!.user, chapPassword: spare!.password },
      });
      t.same((await target(foreign))?.incomingUsers ?? [], [], "nothing bound to the other target");
      t.not((await target())?.tid, tid, "made again under another tid");
      t.equal(
        (await login(spare!.user, spare!.password)).size,
        16 * MiB,
        "the boot's secret opens it",
      );
      t.match(logLines.join(""), /not as this driver left it/);
      await tgtd.tgtadm(["--op", "delete", "--mode", "target", "--tid", `${tid}`]);
    });

    await t.test("a spare name another target has bound is never taken", async (t) => {
      const other = "iqn.2000-01.com.example:has-pcx-b";
      await tgtadmOk(t, "--op new --mode target --tid 90 --targetname", other);
      await tgtadmOk(t, "--op new --mode account --user pcx:b --password", "otherSecret.01");
      await tgtadmOk(t, "--op bind --mode account --tid 90 --user", "pcx:b");
      const specX: TargetSpec = {
        ...spec,
        iqn: `${PREFIX}:pc-x`,
        acl: {
          initiatorIqn: "iqn.2010-04.org.ipxe:pc-x",
          chapUser: "pcx",
          chapPassword: "pcxFirst.0001",
        },
      };
      await driver.apply(specX);
      for (let i = 0; i < 40 && !/no spare for this one/.test(logLines.join("")); i++)
        await new Promise((r) => setTimeout(r, 50));
      t.match(logLines.join(""), /bound to a target: no spare for this one/);
      t.equal(driver.readySecret(specX.iqn, "pcx"), undefined, "no spare");
      t.same((await target(other))?.incomingUsers, ["pcx:b"], "the other target keeps its account");
      await driver.remove(specX.iqn);
      await tgtd.tgtadm(["--op", "delete", "--mode", "target", "--tid", "90"]);
    });

    await t.test(
      "mutual CHAP: no spare (the outgoing account is made again each boot)",
      async (t) => {
        const specM: TargetSpec = {
          ...spec,
          iqn: `${PREFIX}:pc-m`,
          acl: {
            initiatorIqn: "iqn.2010-04.org.ipxe:pc-m",
            chapUser: "pcm",
            chapPassword: "pcmFirst.0001",
            mutualUser: "srv-m",
            mutualPassword: "srvSecret.0001",
          },
        };
        await driver.apply(specM);
        await new Promise((r) => setTimeout(r, 600));
        t.equal(driver.readySecret(specM.iqn, "pcm"), undefined);
        t.notOk((await accounts()).includes("pcm:b"), "no spare account made");
        await driver.remove(specM.iqn);
      },
    );

    await t.test("remove deletes the target's spare and its retired account", async (t) => {
      await spareFor(spec.iqn, (await target())!.incomingUsers[1]!);
      await driver.remove(spec.iqn);
      const left = await accounts();
      t.notOk(
        left.includes("pcs") || left.includes("pcs:b"),
        `no account of it left: ${left.join(", ")}`,
      );
      t.ok(left.includes(TGT_GUARD_USER), "the guard stays");
    });

    t.notMatch(logLines.join(""), /spareSecret\d|pcsFirst/, "no secret in the log");
  },
);
