// Runs in the Debian guest of bench/lio/run.ts (bundled by esbuild, run by the host's node
// binary): bootfleet's LIO target driver and dm-snapshot overlay driver, as the daemon uses
// them. One operation per process; prints its result as one JSON line on stdout.
//
//   agent.cjs lio-apply  <machines> <backing-dir>   apply every machine's target, timed
//   agent.cjs lio-remove <machines>                 remove them, timed
//   agent.cjs lio-check  <machines>                 what configfs and saveconfig.json hold
//   agent.cjs snap-create <image> <id>...            dm-snapshot disks over one image
//   agent.cjs snap-delete <id>...
//   agent.cjs warm <image>                            the daemon's warming of <image>.bootset.csv
import { lstat, readdir, readFile, readlink } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { pino } from "pino";
import { createDmSnapshotDriver } from "../../src/iscsi/overlay/dm-snapshot.js";
import {
  DEFAULT_CONFIGFS_ROOT,
  DEFAULT_SAVECONFIG,
  LioDriver,
} from "../../src/iscsi/target/lio.js";
import { type ConfigFs, nodeConfigFs } from "../../src/iscsi/target/lio-configfs.js";
import { readSaveConfig } from "../../src/iscsi/target/lio-saveconfig.js";
import type { TargetSpec } from "../../src/iscsi/target/types.js";
import { warmVersion } from "../../src/iscsi/warm.js";
import { type AgentCall, runAgent } from "../../test/guest/harness/agent-cli.js";
import { machineNames, PORTAL } from "./machines.js";

const logger = pino({ level: "warn" }, pino.destination(2));

/** The same shape of target the daemon makes for a machine with one system disk. */
function specOf(i: number, backingDir: string, password: string): TargetSpec {
  const m = machineNames(i);
  return {
    iqn: m.target,
    portal: PORTAL,
    luns: [
      {
        lun: 0,
        path: join(backingDir, m.file),
        kind: "file",
        readOnly: false,
        sizeBytes: m.sizeBytes,
        wwn: m.wwn,
      },
    ],
    acl: { initiatorIqn: m.initiator, chapUser: m.chapUser, chapPassword: password },
  };
}

/**
 * Milliseconds spent in each configfs operation, keyed "op name" (the path's last part), so
 * a slow apply shows where its time goes; the rest of an apply is saveconfig.json.
 */
const spent = new Map<string, { ms: number; calls: number }>();
const timedFs = Object.fromEntries(
  Object.entries(nodeConfigFs).map(([op, fn]) => [
    op,
    async (path: string, ...rest: string[]) => {
      const t0 = performance.now();
      try {
        return await (fn as (p: string, ...r: string[]) => Promise<unknown>)(path, ...rest);
      } finally {
        const key = `${op} ${op === "symlink" ? "link" : basename(rest[0] !== undefined && op !== "write" ? rest[0] : path)}`;
        const e = spent.get(key) ?? { ms: 0, calls: 0 };
        e.ms += performance.now() - t0;
        e.calls++;
        spent.set(key, e);
      }
    },
  ]),
) as unknown as ConfigFs;

function lio(): LioDriver {
  return new LioDriver({ iqnPrefix: machineNames(1).prefix, logger, fs: timedFs });
}

/** The configfs operations that took the most time, and their total. */
function configfsSpent() {
  const top = [...spent.entries()].sort((a, b) => b[1].ms - a[1].ms);
  return {
    configfsMs: top.reduce((a, [, e]) => a + e.ms, 0),
    top: top.slice(0, 12).map(([k, e]) => `${k}: ${e.ms.toFixed(0)} ms / ${e.calls}`),
  };
}

const percentile = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
};

async function timedEach(n: number, fn: (i: number) => Promise<void>) {
  const each: number[] = [];
  const started = performance.now();
  for (let i = 1; i <= n; i++) {
    const t0 = performance.now();
    await fn(i);
    each.push(performance.now() - t0);
  }
  const ms = performance.now() - started;
  const firstTen = each.slice(0, 10).reduce((a, b) => a + b, 0) / Math.min(10, each.length);
  const lastTen = each.slice(-10).reduce((a, b) => a + b, 0) / Math.min(10, each.length);
  return {
    ms,
    each,
    medianMs: percentile(each, 50),
    p90Ms: percentile(each, 90),
    firstTenMeanMs: firstTen,
    lastTenMeanMs: lastTen,
  };
}

/**
 * One target as configfs shows it, reduced to what both tools must have made alike:
 * enabled, CHAP required, no demo mode, the portal, LUN 0 on an enabled fileio object of
 * the right file and serial, the one ACL with its CHAP user and LUN 0 mapped. Each fact
 * reads "true" when it holds, so n alike targets tally n times each.
 */
async function targetFacts(i: number, backingDir: string): Promise<Record<string, boolean>> {
  const m = machineNames(i);
  const tpg = join(DEFAULT_CONFIGFS_ROOT, "iscsi", m.target, "tpgt_1");
  const rd = (p: string) =>
    readFile(p, "utf8").then(
      (s) => s.trim(),
      () => undefined,
    );
  const isDir = (p: string) =>
    lstat(p).then(
      (s) => s.isDirectory(),
      () => false,
    );
  const acl = join(tpg, "acls", m.initiator);
  // The LUN's storage object, through its one link (the tools name the link differently).
  const lunDir = join(tpg, "lun", "lun_0");
  let so = "";
  for (const n of await readdir(lunDir).catch(() => [] as string[])) {
    if ((await lstat(join(lunDir, n))).isSymbolicLink())
      so = resolve(lunDir, await readlink(join(lunDir, n)));
  }
  const serial = (await rd(join(so, "wwn", "vpd_unit_serial")))?.replace(
    /^T10 VPD Unit Serial Number:\s*/,
    "",
  );
  return {
    "tpg enabled": (await rd(join(tpg, "enable"))) === "1",
    "authentication=1": (await rd(join(tpg, "attrib", "authentication"))) === "1",
    "generate_node_acls=0": (await rd(join(tpg, "attrib", "generate_node_acls"))) === "0",
    "demo_mode_write_protect=1": (await rd(join(tpg, "attrib", "demo_mode_write_protect"))) === "1",
    "AuthMethod=CHAP": (await rd(join(tpg, "param", "AuthMethod"))) === "CHAP",
    "the one portal":
      (await readdir(join(tpg, "np")).catch(() => [])).join() ===
      `${PORTAL.address}:${PORTAL.port}`,
    "lun0 on its file":
      /File: (\S+)/.exec((await rd(join(so, "info"))) ?? "")?.[1] === join(backingDir, m.file),
    "lun0 object enabled": (await rd(join(so, "enable"))) === "1",
    "lun0 serial": serial === m.wwn,
    "lun0 emulate_tpu=1": (await rd(join(so, "attrib", "emulate_tpu"))) === "1",
    "lun0 write cache": (await rd(join(so, "attrib", "emulate_write_cache"))) === "1",
    "acl chap user": (await rd(join(acl, "auth", "userid"))) === m.chapUser,
    "acl maps lun0": await isDir(join(acl, "lun_0")),
    "no other acl": (await readdir(join(tpg, "acls")).catch(() => [])).join() === m.initiator,
  };
}

async function main({ op, args, need }: AgentCall): Promise<unknown> {
  switch (op) {
    case "lio-apply": {
      const n = Number(need(0));
      const dir = need(1);
      const passwords = JSON.parse(await readFile(need(2), "utf8")) as string[];
      const d = lio();
      // The driver directly, one machine after another, as Reconciler.startup() calls it.
      const r = await timedEach(n, (i) => d.apply(specOf(i, dir, passwords[i - 1] ?? "")));
      return { ...r, ...configfsSpent() };
    }
    case "lio-remove": {
      const n = Number(need(0));
      const d = lio();
      const r = await timedEach(n, (i) => d.remove(machineNames(i).target));
      return { ...r, ...configfsSpent() };
    }
    case "lio-check": {
      const n = Number(need(0));
      const dir = need(1);
      const live = (await readdir(join(DEFAULT_CONFIGFS_ROOT, "iscsi")).catch(() => [])).filter(
        (x) => x.startsWith("iqn."),
      );
      const saved = await readSaveConfig(DEFAULT_SAVECONFIG);
      const holds = new Map<string, number>();
      for (let i = 1; i <= n; i++)
        for (const [fact, ok] of Object.entries(await targetFacts(i, dir)))
          holds.set(fact, (holds.get(fact) ?? 0) + (ok ? 1 : 0));
      return {
        liveTargets: live.length,
        savedTargets: (saved.targets ?? []).length,
        savedStorageObjects: (saved.storage_objects ?? []).length,
        /** How many of the n targets each fact holds for. */
        holds: Object.fromEntries(holds),
      };
    }
    case "snap-create": {
      const d = snapDriver();
      await d.check();
      const refs = [];
      for (const id of args.slice(1)) refs.push(await d.create(need(0), id));
      return refs.map((r) => r.path);
    }
    case "snap-delete": {
      const d = snapDriver();
      for (const id of args) await d.delete(id);
      return d.list();
    }
    case "warm": {
      // What the daemon runs at start and when a version becomes current.
      const started = performance.now();
      const bytes = await warmVersion(need(0), { maxBytes: Number.MAX_SAFE_INTEGER, log: logger });
      return { bytes, ms: performance.now() - started };
    }
    default:
      throw new Error(`unknown operation ${op}`);
  }
}

function snapDriver() {
  return createDmSnapshotDriver({
    dir: process.env.BF_OVERLAYS ?? "/srv/bf/overlays",
    imageDir: process.env.BF_IMAGES ?? "/srv/bf/images",
    logger,
  });
}

runAgent(main);
