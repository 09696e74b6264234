import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, open, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import t, { type Test } from "tap";
import { TGT_GUARD_USER, TgtDriver } from "../../../src/iscsi/target/tgt.js";
import { parseTgtConf } from "../../../src/iscsi/target/tgt-conf.js";
import { parseTgtShowAccounts, parseTgtShowTargets } from "../../../src/iscsi/target/tgt-show.js";
import { tgtdManager } from "../../../src/iscsi/target/tgtd-ipc.js";
import type { TargetSpec } from "../../../src/iscsi/target/types.js";
import { iscsiUrl, readCapacity, run, TestTgtd, unitSerial } from "../../fixtures/iscsi/tgtd.js";

const MiB = 1024 * 1024;
const PREFIX = "iqn.2026-11.lan.bootfleet";
const notRoot = process.getuid?.() !== 0;

t.test(
  "tgt driver against a real tgtd and a real initiator (libiscsi)",
  { skip: notRoot ? "needs root: starts tgtd" : false },
  async (t) => {
    for (const tool of ["/usr/sbin/tgtd", "/usr/bin/iscsi-readcapacity16", "/usr/bin/iscsi-perf"]) {
      // A root run is CI: a missing tool is a missing install step, not a reason to skip.
      if (!existsSync(tool)) t.fail(`${tool} missing: apt-get install tgt libiscsi-bin`);
    }
    if (t.passing() === false) return;

    const dir = await mkdtemp(join(tmpdir(), `bf-iscsi-tgt-${process.pid}-`));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const confDir = join(dir, "conf.d");
    await (await import("node:fs/promises")).mkdir(confDir);
    const mkfile = async (name: string, size: number) => {
      const p = join(dir, name);
      const fh = await open(p, "w");
      await fh.truncate(size);
      await fh.close();
      return p;
    };
    const sysA = await mkfile("sys-a.img", 64 * MiB);
    const games = await mkfile("games.img", 32 * MiB);
    const sysB = await mkfile("sys-b.img", 16 * MiB);
    const extraB = await mkfile("extra-b.img", 8 * MiB);

    const tgtd = await TestTgtd.start();
    t.teardown(() => tgtd.stop());
    const children: ChildProcess[] = [];
    t.teardown(() => {
      for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
    });

    // Someone else's target with tid 1: the driver must work around it and never touch it.
    const other = "iqn.2000-01.com.example:not-ours";
    t.equal(
      (await tgtd.tgtadm(["--op", "new", "--mode", "target", "--tid", "1", "--targetname", other]))
        .code,
      0,
    );

    const logLines: string[] = [];
    const logger = pino({ level: "debug" }, { write: (s: string) => void logLines.push(s) });
    const commands: string[][] = [];
    // Runs right after each management request, before the driver sends its next one.
    let afterRequest: ((args: readonly string[]) => Promise<void>) | undefined;
    const real = tgtdManager(tgtd.controlPort);
    const driver = new TgtDriver({
      iqnPrefix: PREFIX,
      confDir,
      controlPort: tgtd.controlPort,
      logger,
      manage: async (args) => {
        commands.push([...args]);
        const answer = await real(args);
        await afterRequest?.(args);
        return answer;
      },
    });

    const specA: TargetSpec = {
      iqn: `${PREFIX}:pc-a`,
      portal: { address: "127.0.0.1", port: tgtd.portalPort },
      luns: [
        {
          lun: 1,
          path: sysA,
          kind: "file",
          readOnly: false,
          sizeBytes: 64 * MiB,
          wwn: "0b6f7c1e-3d2a-4f5b-9c8d-7e6f5a4b3c2d",
        },
        {
          lun: 2,
          path: games,
          kind: "file",
          readOnly: true,
          sizeBytes: 32 * MiB,
          wwn: "games-0001",
        },
      ],
      acl: {
        initiatorIqn: "iqn.2010-04.org.ipxe:pc-a",
        chapUser: "pca",
        chapPassword: "pcaSecret.001",
      },
    };
    const specB: TargetSpec = {
      iqn: `${PREFIX}:pc-b`,
      portal: { address: "127.0.0.1", port: tgtd.portalPort },
      luns: [
        {
          lun: 1,
          path: sysB,
          kind: "file",
          readOnly: false,
          sizeBytes: 16 * MiB,
          wwn: "sys-b-0001",
        },
      ],
      acl: {
        initiatorIqn: "iqn.2010-04.org.ipxe:pc-b",
        chapUser: "pcb",
        chapPassword: "pcbSecret.002",
        mutualUser: "server-b",
        mutualPassword: "srvSecret.003",
      },
    };
    const loginA = {
      portalPort: tgtd.portalPort,
      iqn: specA.iqn,
      lun: 1,
      initiator: specA.acl.initiatorIqn,
      user: "pca",
      password: "pcaSecret.001",
    };
    const show = async () =>
      parseTgtShowTargets((await tgtd.tgtadm(["--op", "show", "--mode", "target"])).stdout);

    await t.test(
      "apply creates a target that only the right initiator with CHAP gets into",
      async (t) => {
        await driver.apply(specA);
        t.equal(
          (await readCapacity(loginA)).size,
          64 * MiB,
          "system LUN: size of the backing file",
        );
        t.equal((await readCapacity({ ...loginA, lun: 2 })).size, 32 * MiB, "games LUN");
        t.equal(
          await unitSerial(loginA),
          specA.luns[0]?.wwn,
          "the client sees the wwn as unit serial",
        );
        const wrongPw = await readCapacity({ ...loginA, password: "pcaSecret.999" });
        t.equal(wrongPw.size, undefined, "wrong password refused");
        t.match(wrongPw.output, /Authentication failure/);
        const wrongIni = await readCapacity({
          ...loginA,
          initiator: "iqn.2010-04.org.ipxe:intruder",
        });
        t.equal(wrongIni.size, undefined, "wrong initiator IQN refused");
        const noChap = await readCapacity({ ...loginA, user: undefined, password: undefined });
        t.equal(noChap.size, undefined, "no CHAP refused");
        const guardGuess = await readCapacity({
          ...loginA,
          user: TGT_GUARD_USER,
          password: "guessedGuardSecret.01",
        });
        t.equal(guardGuess.size, undefined, "the guard's name with a guessed secret refused");
        t.match(guardGuess.output, /Authentication failure/);

        const a = (await show()).find((x) => x.iqn === specA.iqn);
        t.not(a?.tid, 1, "tid of the foreign target not reused");
        t.same(
          a?.incomingUsers,
          [TGT_GUARD_USER, "pca"],
          "the guard account is bound first, the machine's account after it",
        );
        t.equal(a?.luns.find((l) => l.lun === 2)?.readOnly, true, "games LUN read-only in tgtd");
        t.same(
          [...(a?.acl ?? [])].sort(),
          ["0.0.0.0", specA.acl.initiatorIqn].sort(),
          "bound to the initiator name (and an address no peer has), not ALL",
        );

        const confPath = join(confDir, `${specA.iqn}.conf`);
        // apply resolves once tgtd serves the spec; the file follows under the target's lock.
        await driver.settled(specA.iqn);
        t.equal((await stat(confPath)).mode & 0o777, 0o600, "persisted 0600");
        const conf = parseTgtConf(await readFile(confPath, "utf8"));
        t.same(
          conf?.luns.map((l) => [l.lun, l.path, l.readOnly]),
          [
            [1, sysA, false],
            [2, games, true],
          ],
        );
        t.notMatch(logLines.join(""), /pcaSecret/, "no secret in the log");
      },
    );

    await t.test("applying the same spec again changes nothing", async (t) => {
      commands.length = 0;
      await driver.apply(specA);
      const changing = commands.filter((c) => !c.includes("show"));
      t.same(changing, [], "only show commands ran");
    });

    await t.test("mutual CHAP", async (t) => {
      await driver.apply(specB);
      const loginB = {
        portalPort: tgtd.portalPort,
        iqn: specB.iqn,
        lun: 1,
        initiator: specB.acl.initiatorIqn,
        user: "pcb",
        password: "pcbSecret.002",
        mutualUser: "server-b",
        mutualPassword: "srvSecret.003",
      };
      t.equal((await readCapacity(loginB)).size, 16 * MiB, "both directions authenticated");
      t.equal(
        (await readCapacity({ ...loginB, mutualPassword: "srvSecret.999" })).size,
        undefined,
        "the initiator refuses a target that does not know the mutual secret",
      );
    });

    await t.test("a CHAP user of another machine is not taken over", async (t) => {
      const thief = {
        ...specA,
        iqn: `${PREFIX}:pc-c`,
        acl: { ...specA.acl, initiatorIqn: "iqn.2010-04.org.ipxe:pc-c" },
      };
      await t.rejects(driver.apply(thief), /CHAP user pca is already used by .*pc-a/);
      t.notOk(
        (await show()).some((x) => x.iqn === thief.iqn),
        "no half target left",
      );
    });

    await t.test("changes to B, and to A's own password and LUNs, keep A's session", async (t) => {
      const perf = spawn(
        "iscsi-perf",
        ["-i", specA.acl.initiatorIqn, "-t", "8", "-x", "0", iscsiUrl(loginA)],
        { stdio: ["ignore", "pipe", "pipe"] },
      );
      children.push(perf);
      // Read (bounded) so a full pipe never stalls it.
      let perfErr = "";
      const keep = (b: Buffer) => {
        perfErr = (perfErr + b.toString()).slice(-2000);
      };
      perf.stdout?.on("data", keep);
      perf.stderr?.on("data", keep);
      const perfExit = new Promise<number | null>((resolve) =>
        perf.once("exit", (code) => resolve(code)),
      );
      let nexusBefore: number | undefined;
      const deadline = Date.now() + 5000;
      while (nexusBefore === undefined && Date.now() < deadline) {
        nexusBefore = (await show()).find((x) => x.iqn === specA.iqn)?.nexuses[0]?.nexus;
        if (nexusBefore === undefined) await new Promise((r) => setTimeout(r, 100));
      }
      t.not(nexusBefore, undefined, "A logged in");
      t.same(await driver.sessions(specA.iqn), [
        { initiatorIqn: specA.acl.initiatorIqn, address: "127.0.0.1" },
      ]);
      // The session poll's one read: every target of ours, none of the foreign tid 1.
      const all = await driver.allSessions();
      t.same(
        Object.fromEntries(all),
        {
          [specA.iqn]: [{ initiatorIqn: specA.acl.initiatorIqn, address: "127.0.0.1" }],
          [specB.iqn]: [],
        },
        "allSessions: A's login, B running with none, the foreign target left out",
      );
      // The fleet's one read of every target's I/O: the listing for the tids, one stat of all.
      let io = await driver.allIo();
      for (let i = 0; i < 50 && (io.get(specA.iqn)?.readBytes ?? 0) === 0; i++) {
        await new Promise((r) => setTimeout(r, 100));
        io = await driver.allIo();
      }
      t.same([...io.keys()].sort(), [specA.iqn, specB.iqn], "allIo: ours only, B too");
      t.ok((io.get(specA.iqn)?.readBytes ?? 0) > 0, "allIo: A's reads counted");
      t.same(io.get(specB.iqn), { readBytes: 0, writeBytes: 0, commands: 0 }, "B: none");
      const one = await driver.io(specA.iqn);
      t.ok(
        one.readBytes >= io.get(specA.iqn)!.readBytes && one.commands > 0,
        "io(A) read after it: the same session's counters, not lower",
      );
      await t.rejects(
        driver.remove(specA.iqn),
        /logged-in sessions/,
        "remove refuses a booted machine",
      );

      await driver.apply({
        ...specB,
        luns: [
          ...specB.luns,
          {
            lun: 2,
            path: extraB,
            kind: "file",
            readOnly: false,
            sizeBytes: 8 * MiB,
            wwn: "extra-b",
          },
        ],
      });
      const newA: TargetSpec = {
        ...specA,
        luns: [specA.luns[0]!],
        acl: { ...specA.acl, chapPassword: "pcaSecret.NEW" },
      };
      commands.length = 0;
      await driver.apply(newA);
      // The guard keeps CHAP required while A's account is made again: A's ACL stays.
      t.same(
        commands.filter(
          (c) => c[1] !== "show" && (c[3] === "target" || c.includes(TGT_GUARD_USER)),
        ),
        [],
        "neither the ACL nor the guard is touched by a password change",
      );

      const a = (await show()).find((x) => x.iqn === specA.iqn);
      t.same(
        a?.nexuses.map((n) => n.nexus),
        [nexusBefore],
        "A's I_T nexus is the same one",
      );
      t.same(
        a?.luns.map((l) => l.lun),
        [0, 1],
        "games LUN removed from A",
      );
      t.same(
        (await show()).find((x) => x.iqn === specB.iqn)?.luns.map((l) => l.lun),
        [0, 1, 2],
        "extra LUN added to B",
      );
      // iscsi-perf counts its 8 s down, then prints its overall average. Under load it
      // sometimes hangs in logout after that; the session under test is proven alive by then.
      const deadline2 = Date.now() + 20_000;
      const ended = /iops average \d+ \(\d+ MB\/s\)\s*$|finished/;
      while (!ended.test(perfErr) && perf.exitCode === null && Date.now() < deadline2)
        await new Promise((r) => setTimeout(r, 200));
      const code = await Promise.race([
        perfExit,
        new Promise<null>((r) => setTimeout(() => r(null), 2000)),
      ]);
      t.match(perfErr, /00:00:01 - lba \d+/, "the read load on A ran for its whole time");
      t.match(perfErr, ended, "and completed its run");
      t.notMatch(perfErr, /error|fail|reconnect/i, "without an error or a reconnect");
      t.ok(code === null || code === 0, `exit ${code}`);
      if (perf.exitCode === null) perf.kill("SIGKILL");
      t.equal(
        (await readCapacity({ ...loginA, password: "pcaSecret.NEW" })).size,
        64 * MiB,
        "new password works",
      );
      t.equal((await readCapacity(loginA)).size, undefined, "old password refused");
      t.notMatch(logLines.join(""), /pcaSecret|pcbSecret|srvSecret/, "no secret in the log");
    });

    await t.test(
      "a boot's new secret is 3 tgtd requests, and the target never opens meanwhile",
      async (t) => {
        const nextA: TargetSpec = {
          ...specA,
          luns: [specA.luns[0]!],
          acl: { ...specA.acl, chapPassword: "pcaSecret.4th" },
        };
        // Between the deletion of A's account and its binding again only the guard is bound:
        // the moment when a target without the guard let anyone in without CHAP.
        const meanwhile: { noChap?: number; oldSecret?: number; guardGuess?: number }[] = [];
        afterRequest = async (args) => {
          if (args[1] !== "delete" || args[3] !== "account") return;
          meanwhile.push({
            noChap: (await readCapacity({ ...loginA, user: undefined, password: undefined })).size,
            oldSecret: (await readCapacity({ ...loginA, password: "pcaSecret.NEW" })).size,
            guardGuess: (
              await readCapacity({ ...loginA, user: TGT_GUARD_USER, password: "pcaSecret.NEW" })
            ).size,
          });
          const a = (await show()).find((x) => x.iqn === specA.iqn);
          t.same(a?.incomingUsers, [TGT_GUARD_USER], "meanwhile only the guard is bound");
        };
        commands.length = 0;
        try {
          await driver.apply(nextA);
        } finally {
          afterRequest = undefined;
        }
        const tidA = `${(await show()).find((x) => x.iqn === specA.iqn)?.tid}`;
        t.same(
          commands.map((c) => c.join(" ")),
          [
            `--op bind --mode target --tid ${tidA} --initiator-name ${specA.acl.initiatorIqn}`,
            "--op delete --mode account --user pca",
            "--op new --mode account --user pca --password pcaSecret.4th",
            `--op bind --mode account --tid ${tidA} --user pca`,
          ],
          "A's tid checked (its initiator is in that ACL already: refused, nothing changes), " +
            "then delete, new, bind; no listing (the driver made A as the spec still wants it)",
        );
        t.same(
          meanwhile,
          [{ noChap: undefined, oldSecret: undefined, guardGuess: undefined }],
          "meanwhile no login without CHAP, with the old secret or as the guard",
        );
        t.same(
          (await show()).find((x) => x.iqn === specA.iqn)?.incomingUsers,
          [TGT_GUARD_USER, "pca"],
          "the machine's account is bound again after the guard",
        );
        t.equal(
          (await readCapacity({ ...loginA, password: "pcaSecret.4th" })).size,
          64 * MiB,
          "the new secret opens A",
        );
        t.equal(
          (await readCapacity({ ...loginA, password: "pcaSecret.NEW" })).size,
          undefined,
          "the old secret is refused",
        );
        await driver.apply({ ...nextA, acl: { ...nextA.acl, chapPassword: "pcaSecret.NEW" } });
      },
    );

    /** A target as another tool left it, made by tgtadm requests one at a time. */
    const handMadeTarget = async (
      t: Test,
      o: { iqn: string; tid: string; account: [string, string]; bound: string[]; acl: string[][] },
    ) => {
      const tgtadm = async (args: string[]) =>
        t.equal((await tgtd.tgtadm(args)).code, 0, args.join(" "));
      const tid = ["--tid", o.tid];
      await tgtadm(["--op", "new", "--mode", "target", ...tid, "--targetname", o.iqn]);
      await tgtadm(["--op", "new", "--mode", "logicalunit", ...tid, "--lun", "1", "-b", extraB]);
      const [user, password] = o.account;
      await tgtadm(["--op", "new", "--mode", "account", "--user", user, "--password", password]);
      for (const u of o.bound)
        await tgtadm(["--op", "bind", "--mode", "account", ...tid, "--user", u]);
      for (const entry of o.acl)
        await tgtadm(["--op", "bind", "--mode", "target", ...tid, ...entry]);
    };

    await t.test("a target made without the guard (an older version's) gets it", async (t) => {
      const iqn = `${PREFIX}:pc-old`;
      await handMadeTarget(t, {
        iqn,
        tid: "30",
        account: ["pcold", "oldSecret.001"],
        // What the driver before the guard made: the machine's account only.
        bound: ["pcold"],
        acl: [
          ["--initiator-address", "0.0.0.0"],
          ["--initiator-name", "iqn.2010-04.org.ipxe:pc-old"],
        ],
      });
      const specOld: TargetSpec = {
        iqn,
        portal: { address: "127.0.0.1", port: tgtd.portalPort },
        luns: [
          { lun: 1, path: extraB, kind: "file", readOnly: false, sizeBytes: 8 * MiB, wwn: "old-1" },
        ],
        acl: {
          initiatorIqn: "iqn.2010-04.org.ipxe:pc-old",
          chapUser: "pcold",
          chapPassword: "oldSecret.002",
        },
      };
      const loginOld = {
        portalPort: tgtd.portalPort,
        iqn,
        lun: 1,
        initiator: specOld.acl.initiatorIqn,
        user: "pcold",
        password: "oldSecret.002",
      };
      await driver.apply(specOld);
      const old = (await show()).find((x) => x.iqn === iqn);
      t.same(old?.incomingUsers, [TGT_GUARD_USER, "pcold"], "the guard bound, first");
      t.same(
        [...(old?.acl ?? [])].sort(),
        ["0.0.0.0", specOld.acl.initiatorIqn].sort(),
        "its ACL bound again",
      );
      t.equal((await readCapacity(loginOld)).size, 8 * MiB, "the new secret opens it");
      t.equal(
        (await readCapacity({ ...loginOld, user: undefined, password: undefined })).size,
        undefined,
        "no CHAP refused",
      );
      commands.length = 0;
      await driver.apply({ ...specOld, acl: { ...specOld.acl, chapPassword: "oldSecret.003" } });
      t.same(
        commands.map((c) => `${c[1]} ${c[3]}`),
        ["bind target", "delete account", "new account", "bind account"],
        "its next new secret: the tid checked, then 3 requests, no listing",
      );
      t.equal(
        (await readCapacity({ ...loginOld, password: "oldSecret.003" })).size,
        8 * MiB,
        "and opens it",
      );
      await t.rejects(
        driver.apply({
          ...specOld,
          acl: { ...specOld.acl, chapUser: TGT_GUARD_USER, chapPassword: "oldSecret.004" },
        }),
        /CHAP user bootfleet-guard is reserved/,
        "no machine takes the guard's name",
      );
      await driver.remove(iqn);
    });

    await t.test(
      "a target with the guard after the machine's account is bound again",
      async (t) => {
        // tgt leaves an empty slot where an account is unbound: with the machine's account
        // before the guard, deleting it would break tgtd's listing. Such a target is re-bound.
        const iqn = `${PREFIX}:pc-late`;
        await handMadeTarget(t, {
          iqn,
          tid: "31",
          account: ["pclate", "lateSecret.01"],
          bound: ["pclate", TGT_GUARD_USER],
          acl: [["--initiator-name", "iqn.2010-04.org.ipxe:pc-late"]],
        });
        const spec: TargetSpec = {
          iqn,
          portal: { address: "127.0.0.1", port: tgtd.portalPort },
          luns: [
            {
              lun: 1,
              path: extraB,
              kind: "file",
              readOnly: false,
              sizeBytes: 8 * MiB,
              wwn: "late-1",
            },
          ],
          acl: {
            initiatorIqn: "iqn.2010-04.org.ipxe:pc-late",
            chapUser: "pclate",
            chapPassword: "lateSecret.02",
          },
        };
        await driver.apply(spec);
        t.same(
          (await show()).find((x) => x.iqn === iqn)?.incomingUsers,
          [TGT_GUARD_USER, "pclate"],
          "the guard first now",
        );
        await driver.apply({ ...spec, acl: { ...spec.acl, chapPassword: "lateSecret.03" } });
        t.same(
          (await show()).find((x) => x.iqn === iqn)?.incomingUsers,
          [TGT_GUARD_USER, "pclate"],
          "after a new secret tgtd still lists both, in that order",
        );
        const login = {
          portalPort: tgtd.portalPort,
          iqn,
          lun: 1,
          initiator: spec.acl.initiatorIqn,
          user: "pclate",
          password: "lateSecret.03",
        };
        t.equal((await readCapacity(login)).size, 8 * MiB, "the new secret opens it");
        await driver.remove(iqn);
      },
    );

    await t.test(
      "A's tid given to another target behind the driver's back: checked, undone, made again",
      async (t) => {
        const before = (await show()).find((x) => x.iqn === specA.iqn)!;
        // Someone removes A and makes a target of their own at A's tid (as a restart of
        // tgtd that loads its targets in another order would).
        t.equal(
          (
            await tgtd.tgtadm([
              "--op",
              "delete",
              "--mode",
              "target",
              "--tid",
              `${before.tid}`,
              "--force",
            ])
          ).code,
          0,
        );
        const intruder = "iqn.2000-01.com.example:intruder";
        await handMadeTarget(t, {
          iqn: intruder,
          tid: `${before.tid}`,
          account: ["intruder", "intruderSecret1"],
          bound: ["intruder"],
          acl: [["--initiator-name", "iqn.2000-01.com.example:its-own"]],
        });
        commands.length = 0;
        const nextA: TargetSpec = {
          ...specA,
          luns: [specA.luns[0]!],
          acl: { ...specA.acl, chapPassword: "pcaSecret.moved" },
        };
        await driver.apply(nextA);
        const after = await show();
        const other = after.find((x) => x.iqn === intruder);
        t.same(other?.acl, ["iqn.2000-01.com.example:its-own"], "the other target's ACL as it was");
        t.same(other?.incomingUsers, ["intruder"], "A's account not bound to it");
        const a = after.find((x) => x.iqn === specA.iqn);
        t.not(a?.tid, before.tid, "A made again, at a free tid");
        t.same(a?.incomingUsers, [TGT_GUARD_USER, "pca"]);
        t.same(
          commands.slice(0, 2).map((c) => `${c[1]} ${c[3]}`),
          ["bind target", "unbind target"],
          "the check went through on the other target: undone at once",
        );
        t.ok(
          commands.some((c) => c[1] === "show" && c[3] === "target"),
          "then a listing decided",
        );
        t.equal(
          (await readCapacity({ ...loginA, password: "pcaSecret.moved" })).size,
          64 * MiB,
          "the new secret opens A",
        );
        t.equal(
          (await readCapacity({ ...loginA, iqn: intruder, password: "pcaSecret.moved" })).size,
          undefined,
          "and not the other target",
        );
        await tgtd.tgtadm([
          "--op",
          "delete",
          "--mode",
          "target",
          "--tid",
          `${other?.tid}`,
          "--force",
        ]);
        await tgtd.tgtadm(["--op", "delete", "--mode", "account", "--user", "intruder"]);
      },
    );

    await t.test(
      "a config file that cannot be written: tgtd serves the target, the error is logged",
      async (t) => {
        // The folder is a file: every write fails (root ignores permissions).
        const badDir = await mkfile("not-a-folder", 0);
        const lines: string[] = [];
        const driver3 = new TgtDriver({
          iqnPrefix: PREFIX,
          confDir: badDir,
          controlPort: tgtd.controlPort,
          logger: pino({ level: "info" }, { write: (s: string) => void lines.push(s) }),
          manage: real,
        });
        const iqn = `${PREFIX}:pc-nofile`;
        const spec: TargetSpec = {
          iqn,
          portal: specA.portal,
          luns: [
            { lun: 1, path: sysB, kind: "file", readOnly: false, sizeBytes: 16 * MiB, wwn: "nf" },
          ],
          acl: {
            initiatorIqn: "iqn.2010-04.org.ipxe:pc-nofile",
            chapUser: "pcnofile",
            chapPassword: "noFileSecret.1",
          },
        };
        await driver3.apply(spec);
        await driver3.settled(iqn);
        const login = {
          portalPort: tgtd.portalPort,
          iqn,
          lun: 1,
          initiator: spec.acl.initiatorIqn,
          user: "pcnofile",
          password: "noFileSecret.1",
        };
        t.equal((await readCapacity(login)).size, 16 * MiB, "the secret opens it all the same");
        const errors = lines.map((l) => JSON.parse(l)).filter((l) => l.level >= 50);
        t.match(
          errors.map((l) => `${l.msg}: ${l.err}`).join("\n"),
          /config file not written.*ENOTDIR/,
          "the failed write is logged, with why",
        );
        t.notMatch(lines.join(""), /noFileSecret/, "no secret in the log");
        // Once the folder is there, the next apply writes the file it could not.
        await rm(badDir);
        await (await import("node:fs/promises")).mkdir(badDir);
        await driver3.apply(spec);
        await driver3.settled(iqn);
        t.match(
          await readFile(join(badDir, `${iqn}.conf`), "utf8"),
          /incominguser pcnofile/,
          "written by the next apply",
        );
        await driver3.remove(iqn);
      },
    );

    await t.test("a driver started again keeps the guard account tgtd has", async (t) => {
      const again: string[][] = [];
      const driver2 = new TgtDriver({
        iqnPrefix: PREFIX,
        confDir,
        controlPort: tgtd.controlPort,
        logger,
        manage: (args) => {
          again.push([...args]);
          return real(args);
        },
      });
      await driver2.apply({
        ...specA,
        luns: [specA.luns[0]!],
        acl: { ...specA.acl, chapPassword: "pcaSecret.5th" },
      });
      t.same(
        again.filter((c) => c[1] !== "show" && c.includes(TGT_GUARD_USER)),
        [],
        "the guard is neither made again nor re-bound (deleting it would empty slot 0 everywhere)",
      );
      t.equal(
        (await readCapacity({ ...loginA, password: "pcaSecret.5th" })).size,
        64 * MiB,
        "its change of A's secret works",
      );
      await driver.apply({
        ...specA,
        luns: [specA.luns[0]!],
        acl: { ...specA.acl, chapPassword: "pcaSecret.NEW" },
      });
    });

    await t.test("new secrets for two machines at once: side by side, each its own", async (t) => {
      // A boot storm: every script request gives its target a new CHAP secret. Changes
      // confined to one existing target run beside each other (the shared lock), with one
      // listing for all who ask together.
      const nextA: TargetSpec = {
        ...specA,
        luns: [specA.luns[0]!],
        acl: { ...specA.acl, chapPassword: "pcaSecret.3rd" },
      };
      const bLuns = [
        ...specB.luns,
        {
          lun: 2,
          path: extraB,
          kind: "file" as const,
          readOnly: false,
          sizeBytes: 8 * MiB,
          wwn: "extra-b",
        },
      ];
      const nextB: TargetSpec = {
        ...specB,
        luns: bLuns,
        acl: { ...specB.acl, chapPassword: "pcbSecret.3rd", mutualPassword: "srvSecret.3rd" },
      };
      commands.length = 0;
      await Promise.all([driver.apply(nextA), driver.apply(nextB)]);
      const tids = new Map((await show()).map((x) => [`${x.tid}`, x.iqn]));
      const owner = (c: string[]) => {
        const tid = c[c.indexOf("--tid") + 1];
        const iqn = c.includes("--tid") && tid !== undefined ? tids.get(tid) : undefined;
        if (iqn === specA.iqn || c.includes("pca")) return "A";
        if (iqn === specB.iqn || c.includes("pcb") || c.includes("server-b")) return "B";
        return "";
      };
      const order = commands.filter((c) => c[1] !== "show").map(owner);
      t.ok(
        order.every((o) => o !== ""),
        "every change names A's or B's account or initiator",
      );
      const firstB = order.indexOf("B");
      t.ok(
        firstB >= 0 && firstB < order.lastIndexOf("A"),
        `B's changes began before A's ended (${order.join("")})`,
      );
      const loginB = {
        portalPort: tgtd.portalPort,
        iqn: specB.iqn,
        lun: 1,
        initiator: specB.acl.initiatorIqn,
        user: "pcb",
        mutualUser: "server-b",
      };
      t.equal(
        (await readCapacity({ ...loginA, password: "pcaSecret.3rd" })).size,
        64 * MiB,
        "A: the new secret opens A",
      );
      t.equal(
        (await readCapacity({ ...loginA, password: "pcaSecret.NEW" })).size,
        undefined,
        "A: the previous secret is refused",
      );
      t.equal(
        (
          await readCapacity({
            ...loginB,
            password: "pcbSecret.3rd",
            mutualPassword: "srvSecret.3rd",
          })
        ).size,
        16 * MiB,
        "B: the new secrets open B, both directions",
      );
      t.equal(
        (
          await readCapacity({
            ...loginB,
            password: "pcbSecret.002",
            mutualPassword: "srvSecret.3rd",
          })
        ).size,
        undefined,
        "B: the previous secret is refused",
      );
      t.equal(
        (await readCapacity({ ...loginA, user: "pcb", password: "pcbSecret.3rd" })).size,
        undefined,
        "B's account does not open A",
      );
      t.notMatch(logLines.join(""), /pcaSecret|pcbSecret|srvSecret/, "no secret in the log");
      // The tests below log in to A with the secret it had before this one.
      await driver.apply({ ...nextA, acl: { ...nextA.acl, chapPassword: "pcaSecret.NEW" } });
    });

    await t.test("remove removes only its own target", async (t) => {
      await driver.remove(specB.iqn);
      const targets = await show();
      t.same(targets.map((x) => x.iqn).sort(), [other, specA.iqn].sort());
      t.same(await driver.list(), [specA.iqn], "list shows bootfleet's targets only");
      const accounts = parseTgtShowAccounts(
        (await tgtd.tgtadm(["--op", "show", "--mode", "account"])).stdout,
      );
      t.same(
        accounts.sort(),
        [TGT_GUARD_USER, "pca"].sort(),
        "B's accounts went with it, the guard stays",
      );
      t.notOk(existsSync(join(confDir, `${specB.iqn}.conf`)), "B's file removed");
      t.equal(
        (await readCapacity({ ...loginA, password: "pcaSecret.NEW" })).size,
        64 * MiB,
        "A still serves",
      );
      await driver.remove(specB.iqn);
      t.pass("removing again is a no-op");
    });

    await t.test(
      "the persisted file is real tgt config: tgt-admin loads it into a fresh tgtd",
      async (t) => {
        const tgtd2 = await TestTgtd.start();
        t.teardown(() => tgtd2.stop());
        await driver.settled(specA.iqn);
        const conf = join(confDir, `${specA.iqn}.conf`);
        const r = await run("tgt-admin", ["-C", `${tgtd2.controlPort}`, "-c", conf, "-e"]);
        t.equal(r.code, 0, `tgt-admin: ${r.stderr}`);
        const loaded = parseTgtShowTargets(
          (await tgtd2.tgtadm(["--op", "show", "--mode", "target"])).stdout,
        );
        const orig = (await show()).find((x) => x.iqn === specA.iqn);
        const a = loaded.find((x) => x.iqn === specA.iqn);
        const view = (v: typeof a) =>
          v && {
            luns: v.luns
              .filter((l) => l.lun > 0)
              .map((l) => [l.lun, l.backingStorePath, l.readOnly, l.scsiSn, l.scsiId]),
            // The guard is this driver's, made when it starts: not in the file.
            incoming: v.incomingUsers.filter((u) => u !== TGT_GUARD_USER),
            acl: [...v.acl].sort(),
          };
        t.same(view(a), view(orig), "same LUNs, serials, accounts and ACL as the live target");
        t.notOk(a?.acl.includes("ALL"), "tgt-admin did not open it to ALL");
        t.equal(
          (
            await readCapacity({
              ...loginA,
              portalPort: tgtd2.portalPort,
              password: "pcaSecret.NEW",
              initiator: "iqn.2010-04.org.ipxe:intruder",
            })
          ).size,
          undefined,
          "an intruder's initiator name is refused after a reload too",
        );
        t.equal(
          (
            await readCapacity({
              ...loginA,
              portalPort: tgtd2.portalPort,
              password: "pcaSecret.NEW",
            })
          ).size,
          64 * MiB,
          "and the stored secret logs in",
        );
      },
    );

    t.ok(
      (await show()).some((x) => x.iqn === other),
      "the foreign target survived everything",
    );
  },
);
