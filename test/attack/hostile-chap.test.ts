import { readdir, readFile } from "node:fs/promises";
import { pino } from "pino";
import t from "tap";
import { TgtDriver } from "../../src/iscsi/target/tgt.js";
import { tgtdManager } from "../../src/iscsi/target/tgtd-ipc.js";
import type { TargetSpec } from "../../src/iscsi/target/types.js";
import { readCapacity, TestTgtd, tgtScratch } from "../fixtures/iscsi/tgtd.js";

const MiB = 1024 * 1024;
const PREFIX = "iqn.2026-11.lan.bootfleet";
const notRoot = process.getuid?.() !== 0;

/** Every process's arguments, as any local user can read them. */
async function allCmdlines(): Promise<string[]> {
  const out: string[] = [];
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      out.push((await readFile(`/proc/${pid}/cmdline`)).toString("utf8").replaceAll("\0", " "));
    } catch {
      // the process ended meanwhile
    }
  }
  return out;
}

t.test(
  "CHAP secrets reach tgtd without appearing on any command line; CHAP login still works",
  { skip: notRoot ? "needs root: starts tgtd" : false },
  async (t) => {
    const scratch = await tgtScratch(t, "hostile-chap", 16 * MiB);
    if (!scratch) return;
    const { confDir, disk } = scratch;
    const tgtd = await TestTgtd.start();
    t.teardown(() => tgtd.stop());

    const requests: string[][] = [];
    const real = tgtdManager(tgtd.controlPort);
    const driver = new TgtDriver({
      iqnPrefix: PREFIX,
      confDir,
      controlPort: tgtd.controlPort,
      logger: pino({ level: "silent" }),
      manage: (args) => {
        requests.push([...args]);
        return real(args);
      },
    });
    const secret = `chapSecret${process.pid}x`;
    const mutual = `mutualSecret${process.pid}y`;
    const spec: TargetSpec = {
      iqn: `${PREFIX}:hostile-${process.pid}`,
      portal: { address: "127.0.0.1", port: tgtd.portalPort },
      luns: [
        { lun: 1, path: disk, kind: "file", readOnly: false, sizeBytes: 16 * MiB, wwn: "h-1" },
      ],
      acl: {
        initiatorIqn: "iqn.2010-04.org.ipxe:hostile",
        chapUser: "hostileuser",
        chapPassword: secret,
        mutualUser: "hostileserver",
        mutualPassword: mutual,
      },
    };

    // Sample every process's arguments for as long as the apply runs.
    let applying = true;
    let samples = 0;
    const seen: string[] = [];
    const sampler = (async () => {
      while (applying) {
        for (const line of await allCmdlines()) {
          if (line.includes(secret) || line.includes(mutual)) seen.push(line);
        }
        samples++;
      }
    })();
    try {
      await driver.apply(spec);
      // The password changes (rotation): the account is created again.
      await driver.apply({ ...spec, acl: { ...spec.acl, chapPassword: `${secret}2` } });
    } finally {
      applying = false;
      await sampler;
    }
    t.comment(
      `${requests.length} requests to tgtd, /proc sampled ${samples} times during the applies`,
    );
    t.ok(requests.length > 0, "the driver spoke to tgtd");
    // The secrets go to tgtd in the account-creation requests only, over its root-only socket.
    const carrying = requests.filter((a) =>
      a.some((x) => x.includes(secret) || x.includes(mutual)),
    );
    t.ok(
      carrying.length > 0 &&
        carrying.every((a) => a.join(" ").startsWith("--op new --mode account --user ")),
      "a secret is sent only in a new-account request",
    );
    t.same(seen, [], "no secret in any /proc/PID/cmdline while applying");

    const login = {
      portalPort: tgtd.portalPort,
      iqn: spec.iqn,
      lun: 1,
      initiator: spec.acl.initiatorIqn,
      user: "hostileuser",
      password: `${secret}2`,
    };
    t.equal((await readCapacity(login)).size, 16 * MiB, "CHAP login with the new secret works");
    t.equal((await readCapacity({ ...login, password: secret })).size, undefined, "old one not");
  },
);
