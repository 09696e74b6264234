/**
 * Applying 200 machines' iSCSI targets with tgt: bootfleet's reconciler against a shell loop of
 * plain tgtadm commands doing the same 200 targets.
 *
 *   node --import tsx bench/targets/run.ts [--machines 200] [--changes 10]
 *
 * Root (loop-mounted XFS, tgtd). About a minute on a 2-core VM; writes ~100 MiB to a sparse
 * backing file that is removed at the end. Prints Markdown; bench/targets/RESULTS.md records a run.
 *
 * It times, on a tgtd of its own (own control port, portal on loopback):
 *  1. `Reconciler.startup()` from scratch: every overlay cloned and every target applied;
 *  2. `startup()` again when everything exists (adopt);
 *  3. `reconcileMachine(id)` after one machine's CHAP password changed, with all targets up
 *     (median of --changes), and that it leaves every other target as it was;
 * and, on a second tgtd, the baseline: `cp --reflink=always` and six tgtadm commands per target
 * in a bash loop, and the three tgtadm commands that change one CHAP password by hand.
 */
import { ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat } from "node:fs/promises";
import { cpus, loadavg, release, tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import { commandRunner } from "../../src/host/exec.js";
import type { OverlayOwner } from "../../src/iscsi/overlay/owner.js";
import { createReflinkDriver } from "../../src/iscsi/overlay/reflink.js";
import type { OverlayDriver } from "../../src/iscsi/overlay/types.js";
import { Reconciler } from "../../src/iscsi/reconciler.js";
import { writeFileAtomic } from "../../src/iscsi/target/atomic-write.js";
import { TgtDriver } from "../../src/iscsi/target/tgt.js";
import { type TgtdManager, tgtdManager } from "../../src/iscsi/target/tgtd-ipc.js";
import { Store } from "../../src/store/index.js";
import { readCapacity, run, TestTgtd } from "../../test/fixtures/iscsi/tgtd.js";
import { type LoopFs, mountLoopFs } from "../../test/iscsi/overlay/loopfs.js";
import { benchArgs } from "../lib/args.js";

const cli = benchArgs();
const opt = cli.positiveInt;
const N = opt("machines", 200);
const CHANGES = opt("changes", 10);
if (N > 999) throw new Error("--machines is at most 999 (pc-NNN names)");

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const PREFIX = "iqn.2024-01.io.bootfleet";
const pad = (i: number) => String(i).padStart(3, "0");
const targetIqn = (i: number) => `${PREFIX}:pc-${pad(i)}`;
const initiatorIqn = (i: number) => `${PREFIX}:client-${pad(i)}`;
const password = () => `Pw-${randomBytes(9).toString("hex")}`;

// ---------------------------------------------------------------------------------------------
// Instruments: every child process this process starts, every tgtadm call the driver makes (by
// op and mode, with its wall time), every overlay operation.

interface Tally {
  count: number;
  ms: number;
}
const bump = (m: Map<string, Tally>, key: string, ms: number) => {
  const t = m.get(key) ?? { count: 0, ms: 0 };
  t.count++;
  t.ms += ms;
  m.set(key, t);
};

class Counters {
  spawns = new Map<string, Tally>();
  tgtadm = new Map<string, Tally>();
  overlay = new Map<string, Tally>();
  /** Wall time of each `show --mode target`, in call order. */
  showTargetMs: number[] = [];
  /** When each overlay create() began, in call order (one per target in startup). */
  createStarts: number[] = [];
  logs: { msg: string; changes?: string[] }[] = [];
}
let cur = new Counters();

// execFile and spawn both end in ChildProcess.prototype.spawn: counting there sees every
// process, whichever module started it.
// (spawn() is internal to Node, so not in its types.)
const proto = ChildProcess.prototype as unknown as {
  spawn(this: ChildProcess, options: { file?: string }): unknown;
};
const origSpawn = proto.spawn;
proto.spawn = function (options) {
  const file = options.file ?? "?";
  bump(cur.spawns, file.split("/").pop() ?? file, 0);
  return origSpawn.call(this, options);
};

function countingManager(inner: TgtdManager): TgtdManager {
  return async (args) => {
    const op = args[args.indexOf("--op") + 1] ?? "?";
    const mode = args[args.indexOf("--mode") + 1] ?? "?";
    const started = performance.now();
    try {
      return await inner(args);
    } finally {
      const ms = performance.now() - started;
      bump(cur.tgtadm, `${op} ${mode}`, ms);
      if (op === "show" && mode === "target") cur.showTargetMs.push(ms);
    }
  };
}

function countingOverlays(inner: OverlayDriver): OverlayDriver {
  const timed =
    <A extends unknown[], R>(name: string, fn: (...a: A) => Promise<R>) =>
    async (...a: A): Promise<R> => {
      const started = performance.now();
      if (name === "create") cur.createStarts.push(started);
      try {
        return await fn(...a);
      } finally {
        bump(cur.overlay, name, performance.now() - started);
      }
    };
  return {
    name: inner.name,
    check: () => inner.check(),
    create: timed("create", (i: string, id: string, o?: OverlayOwner) => inner.create(i, id, o)),
    reset: timed("reset", (i: string, id: string, o?: OverlayOwner) => inner.reset(i, id, o)),
    delete: timed("delete", (id: string) => inner.delete(id)),
    usage: (id) => inner.usage(id),
    list: timed("list", () => inner.list()),
    quarantine: (id, reason) => inner.quarantine(id, reason),
    quarantined: () => inner.quarantined(),
    deleteQuarantined: (name) => inner.deleteQuarantined(name),
  };
}

/** pino into memory: the tgt driver logs what each apply changed ("persisted" = conf written). */
const logStream = new Writable({
  write(chunk, _enc, cb) {
    for (const line of String(chunk).split("\n")) {
      if (!line) continue;
      const o = JSON.parse(line) as { msg: string; changes?: string[] };
      cur.logs.push({ msg: o.msg, ...(o.changes ? { changes: o.changes } : {}) });
    }
    cb();
  },
});

// ---------------------------------------------------------------------------------------------

const cleanups: (() => Promise<void>)[] = [];
let cleaning: Promise<void> | undefined;
function cleanupAll(): Promise<void> {
  cleaning ??= (async () => {
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch (err) {
        console.error("cleanup step failed:", err);
      }
    }
  })();
  return cleaning;
}
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    console.error(`${sig}: cleaning up`);
    void cleanupAll().then(() => process.exit(130));
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
const sum = (m: Map<string, Tally>) => [...m.values()].reduce((a, t) => a + t.count, 0);
const sumMs = (m: Map<string, Tally>) => [...m.values()].reduce((a, t) => a + t.ms, 0);
const f0 = (x: number) => x.toFixed(0);
const f1 = (x: number) => x.toFixed(1);
const f2 = (x: number) => (x < 10 ? x.toFixed(2) : x.toFixed(0));

async function measure<T>(fn: () => Promise<T>): Promise<{ ms: number; c: Counters; v: T }> {
  cur = new Counters();
  const started = performance.now();
  const v = await fn();
  const ms = performance.now() - started;
  const c = cur;
  cur = new Counters();
  return { ms, c, v };
}

/** `tgtadm --op show --mode target` split into one text block per IQN. */
async function showBlocks(tgtd: TestTgtd): Promise<Map<string, string>> {
  const r = await tgtd.tgtadm(["--op", "show", "--mode", "target"]);
  if (r.code !== 0) throw new Error(`tgtadm show failed: ${r.stderr}`);
  const blocks = new Map<string, string>();
  for (const block of r.stdout.split(/^(?=Target \d+: )/m)) {
    const m = /^Target \d+: (\S+)/.exec(block);
    if (m) blocks.set(m[1]!, block);
  }
  return blocks;
}

async function confSnapshot(dir: string): Promise<Map<string, { text: string; mtimeMs: number }>> {
  const out = new Map<string, { text: string; mtimeMs: number }>();
  for (const f of await readdir(dir)) {
    if (!f.endsWith(".conf")) continue;
    const p = join(dir, f);
    out.set(f, { text: await readFile(p, "utf8"), mtimeMs: (await stat(p)).mtimeMs });
  }
  return out;
}

async function makeGolden(path: string): Promise<void> {
  // 1 GiB apparent, 64 MiB of random data in 16 pieces of 4 MiB spread over it.
  const fh = await open(path, "wx");
  try {
    const chunk = randomBytes(4 * MiB);
    for (let i = 0; i < 16; i++) {
      chunk.writeUInt32LE(i, 0);
      await fh.write(chunk, 0, chunk.length, i * 64 * MiB);
    }
    await fh.truncate(GiB);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function bash(script: string, env: Record<string, string>): Promise<{ ms: number }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn("bash", ["-c", script], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let err = "";
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve({ ms: performance.now() - started });
      else reject(new Error(`baseline script exited ${code}: ${err.slice(0, 2000)}`));
    });
  });
}

// What a user who knows tgt would type for one target: the same end state as bootfleet's, less
// its unmatchable initiator-address entry (an ACL of the initiator name alone admits the same).
const BASELINE_TARGETS = `
set -e
for i in $(seq 1 "$N"); do
  n=$(printf %03d "$i")
  t="tgtadm -C $C --lld iscsi"
  $t --op new --mode target --tid "$i" --targetname "$P:pc-$n"
  $t --op new --mode logicalunit --tid "$i" --lun 1 --backing-store "$D/pc-$n.img"
  $t --op update --mode logicalunit --tid "$i" --lun 1 --params "readonly=0,scsi_sn=sn$n,scsi_id=sn$n"
  $t --op new --mode account --user "pc-$n" --password "Base-$n-secret-0"
  $t --op bind --mode account --tid "$i" --user "pc-$n"
  $t --op bind --mode target --tid "$i" --initiator-name "$P:client-$n"
done
`;
const BASELINE_CLONES = `
set -e
for i in $(seq 1 "$N"); do
  cp --reflink=always "$G" "$D/pc-$(printf %03d "$i").img"
done
`;
// tgtadm cannot change a password: delete the account (which unbinds it), make it, bind it.
const BASELINE_CHAP = `
set -e
t="tgtadm -C $C --lld iscsi"
$t --op delete --mode account --user "pc-$M"
$t --op new --mode account --user "pc-$M" --password "$W"
$t --op bind --mode account --tid "$TID" --user "pc-$M"
`;

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    console.error("needs root: it mounts a loop XFS and runs tgtd");
    process.exit(2);
  }
  const benchStarted = performance.now();
  const loadAtStart = loadavg()[0] ?? 0;
  const checks: { ok: boolean; what: string }[] = [];
  const check = (ok: boolean, what: string) => {
    checks.push({ ok, what });
    if (!ok) console.error(`CHECK FAILED: ${what}`);
  };

  const fs: LoopFs = await mountLoopFs("xfs-reflink", 4 * GiB, "bench-targets");
  cleanups.push(() => fs.cleanup());
  // The conf folder stands for /etc/tgt/conf.d: on the root file system, not the loop XFS.
  const tmp = await mkdtemp(join(tmpdir(), `bf-bench-targets-${process.pid}-`));
  cleanups.push(() => rm(tmp, { recursive: true, force: true }));
  const confDir = join(tmp, "conf.d");
  const images = join(fs.dir, "images");
  const overlaysDir = join(fs.dir, "overlays");
  const baseDir = join(fs.dir, "baseline");
  await Promise.all([mkdir(confDir), mkdir(images), mkdir(overlaysDir), mkdir(baseDir)]);
  const golden = join(images, "golden.raw");
  await makeGolden(golden);

  const store = Store.open({ path: join(tmp, "bootfleet.db"), busyTimeoutMs: 1000 });
  cleanups.push(async () => store.close());

  const tgtd = await TestTgtd.start();
  cleanups.push(() => tgtd.stop());

  const image = store.images.create({
    name: "Golden",
    filename: "golden.raw",
    status: "ready",
    format: "raw",
  });
  store.images.addVersion(image.id, { path: golden, size_bytes: GiB });
  const machineIds: number[] = [];
  const targetIds: number[] = [];
  store.transaction(() => {
    for (let i = 1; i <= N; i++) {
      const m = store.machines.create({
        name: `pc-${pad(i)}`,
        mac_address: `52:54:00:bf:${(i >> 8).toString(16).padStart(2, "0")}:${(i & 0xff).toString(16).padStart(2, "0")}`,
        status: "active",
        boot_action: "sanboot",
      });
      const t = store.targets.create({
        name: `pc-${pad(i)}-target`,
        iqn: targetIqn(i),
        portal_ip: "127.0.0.1",
        portal_port: tgtd.portalPort,
        machine_id: m.id,
        system_image_id: image.id,
        initiator_iqn: initiatorIqn(i),
        chap_username: `pc-${pad(i)}`,
        chap_password: password(),
      });
      machineIds.push(m.id);
      targetIds.push(t.id);
    }
  });

  const logger = pino({ level: "debug" }, logStream);
  const overlays = countingOverlays(
    createReflinkDriver({ dir: overlaysDir, imageDir: images, logger }),
  );
  await overlays.check();
  const targets = new TgtDriver({
    iqnPrefix: PREFIX,
    confDir,
    controlPort: tgtd.controlPort,
    logger,
    manage: countingManager(tgtdManager(tgtd.controlPort)),
  });
  const reconciler = new Reconciler({
    store,
    targets,
    overlays,
    log: logger,
    portal: { address: "127.0.0.1", port: tgtd.portalPort },
    imagePath: (id) => (id === image.id ? golden : undefined),
  });

  // 1. From scratch.
  const scratch = await measure(() => reconciler.startup());
  const afterScratch = await showBlocks(tgtd);
  check(afterScratch.size === N, `${N} targets running after startup (saw ${afterScratch.size})`);
  check(
    store.targets.allActive().every((t) => t.status === "active"),
    "every target's status is active",
  );
  check((await readdir(confDir)).length === N, `${N} conf files written`);
  check(
    (await overlays.list()).length === N,
    `${N} overlays exist (saw ${(await overlays.list()).length})`,
  );
  const sampleBlock = afterScratch.get(targetIqn(1)) ?? "";
  check(
    /LUN: 1/.test(sampleBlock) &&
      /Account information:\s+pc-001/.test(sampleBlock) &&
      sampleBlock.includes(initiatorIqn(1)),
    "a target has its LUN 1, its CHAP account and its initiator in the ACL",
  );
  const showBytes = (await tgtd.tgtadm(["--op", "show", "--mode", "target"])).stdout.length;

  // 2. Adopt: everything exists.
  const confBeforeAdopt = await confSnapshot(confDir);
  const adopt = await measure(() => reconciler.startup());
  const confAfterAdopt = await confSnapshot(confDir);
  const afterAdopt = await showBlocks(tgtd);
  check(
    [...afterScratch].every(([iqn, b]) => afterAdopt.get(iqn) === b),
    "adopt leaves every target's tgtadm show output unchanged",
  );
  check(
    [...confBeforeAdopt].every(([f, v]) => confAfterAdopt.get(f)?.mtimeMs === v.mtimeMs),
    "adopt rewrites no conf file",
  );

  // 3. One machine's CHAP password changes while all exist.
  const k = Math.ceil(N / 2);
  const kMachine = machineIds[k - 1]!;
  const kTarget = targetIds[k - 1]!;
  const kConf = `${targetIqn(k)}.conf`;
  const before = await showBlocks(tgtd);
  const confBefore = await confSnapshot(confDir);
  const changeRuns: { ms: number; c: Counters }[] = [];
  let lastPassword = "";
  let oldPassword = store.targets.get(kTarget)!.chap_password;
  for (let r = 0; r < CHANGES; r++) {
    oldPassword = store.targets.get(kTarget)!.chap_password;
    lastPassword = password();
    store.targets.update(kTarget, { chap_password: lastPassword });
    changeRuns.push(await measure(() => reconciler.reconcileMachine(kMachine)));
  }
  const noopRuns: { ms: number; c: Counters }[] = [];
  for (let r = 0; r < CHANGES; r++)
    noopRuns.push(await measure(() => reconciler.reconcileMachine(kMachine)));
  const after = await showBlocks(tgtd);
  const confAfter = await confSnapshot(confDir);
  const othersSame = [...before].filter(([iqn]) => iqn !== targetIqn(k));
  check(
    othersSame.every(([iqn, b]) => after.get(iqn) === b),
    `changing ${targetIqn(k)} ${CHANGES}× leaves the other ${othersSame.length} targets' tgtadm show output unchanged`,
  );
  check(
    [...confBefore].every(
      ([f, v]) =>
        f === kConf ||
        (confAfter.get(f)?.text === v.text && confAfter.get(f)?.mtimeMs === v.mtimeMs),
    ),
    "and leaves every other conf file untouched (content and mtime)",
  );
  check(
    confAfter.get(kConf)?.text.includes(`incominguser pc-${pad(k)} ${lastPassword}`) === true,
    "the changed machine's conf file holds its new password",
  );
  check(
    (after.get(targetIqn(k)) ?? "").includes(`pc-${pad(k)}`) &&
      (after.get(targetIqn(k)) ?? "").includes(initiatorIqn(k)),
    "the changed target has its account and ACL bound again",
  );
  const login = (pw: string) =>
    readCapacity({
      portalPort: tgtd.portalPort,
      iqn: targetIqn(k),
      lun: 1,
      initiator: initiatorIqn(k),
      user: `pc-${pad(k)}`,
      password: pw,
    });
  const newLogin = await login(lastPassword);
  const oldLogin = await login(oldPassword);
  check(newLogin.size === GiB, `login with the new password reads a 1 GiB disk (${newLogin.size})`);
  check(oldLogin.size === undefined, "login with the previous password is refused");

  // Where the per-target time goes in startup: conf writes alone, on the same file system.
  const atomicDir = join(tmp, "atomic");
  await mkdir(atomicDir);
  const confText = confAfter.get(`${targetIqn(1)}.conf`)?.text ?? "x";
  const atomic = await measure(async () => {
    for (let i = 0; i < N; i++) await writeFileAtomic(join(atomicDir, `${i}.conf`), confText);
  });

  // Baseline: a second tgtd, clones and tgtadm in bash loops.
  const base = await TestTgtd.start();
  cleanups.push(() => base.stop());
  const env = {
    N: String(N),
    C: String(base.controlPort),
    P: PREFIX,
    D: baseDir,
    G: golden,
  };
  const bClones = await measure(() => bash(BASELINE_CLONES, env));
  const bTargets = await measure(() => bash(BASELINE_TARGETS, env));
  const baseBlocks = await showBlocks(base);
  check(baseBlocks.size === N, `baseline: ${N} targets running (saw ${baseBlocks.size})`);
  const bChanges: number[] = [];
  for (let r = 0; r < CHANGES; r++) {
    const res = await measure(() =>
      bash(BASELINE_CHAP, { C: env.C, M: pad(k), TID: String(k), W: password() }),
    );
    bChanges.push(res.ms);
  }
  const baseAfter = await showBlocks(base);
  check(
    [...baseBlocks].every(([iqn, b]) => baseAfter.get(iqn) === b),
    "baseline CHAP change leaves every target's show output as it was (account re-bound)",
  );
  // The cost of one process start, alone: the same cheap tgtadm call from Node's execFile (what
  // the driver uses) and from bash, on the baseline tgtd.
  const sys = ["-C", String(base.controlPort), "--op", "show", "--mode", "sys"];
  const nodeRunner = commandRunner({ timeoutMs: 15_000, maxOutputChars: 16 * 1024 * 1024 });
  const SPAWNS = 50;
  const nodeSpawn = await measure(async () => {
    for (let r = 0; r < SPAWNS; r++) await nodeRunner("tgtadm", sys);
  });
  const bashSpawn = await measure(() =>
    bash(`for i in $(seq ${SPAWNS}); do tgtadm ${sys.join(" ")} >/dev/null; done`, {}),
  );
  const bShow: number[] = [];
  for (let r = 0; r < 5; r++) {
    const started = performance.now();
    await run("tgtadm", ["-C", String(base.controlPort), "--op", "show", "--mode", "target"]);
    bShow.push(performance.now() - started);
  }
  const bSingle: number[] = [];
  for (let r = 0; r < 5; r++) {
    const started = performance.now();
    await run("tgtadm", ["-C", String(base.controlPort), "--op", "show", "--mode", "account"]);
    bSingle.push(performance.now() - started);
  }

  // ------------------------------------------------------------------------------------------
  // Report.
  const out: string[] = [];
  const line = (s = "") => out.push(s);
  const totalMs = performance.now() - benchStarted;
  const { stdout: tgtVer } = await run("tgtd", ["--version"]);
  line(
    `Machine: ${cpus().length} × ${cpus()[0]?.model.trim() ?? "?"}, Linux ${release()}, Node ${process.version}, tgt ${tgtVer.trim() || "?"}; ${N} machines; whole run ${f1(totalMs / 1000)} s; 1-min load average ${f1(loadAtStart)} at start, ${f1(loadavg()[0] ?? 0)} at end.`,
  );
  line();
  const chMs = changeRuns.map((r) => r.ms);
  const noMs = noopRuns.map((r) => r.ms);
  const bTotal = bClones.ms + bTargets.ms;
  line("| what | wall time | per target | baseline (bash + tgtadm) | bootfleet / baseline |");
  line("| --- | ---: | ---: | ---: | ---: |");
  line(
    `| 1. startup() from scratch (clone + apply ${N}) | ${f1(scratch.ms / 1000)} s | ${f1(scratch.ms / N)} ms | ${f1(bTotal / 1000)} s (clones ${f1(bClones.ms / 1000)} s + tgtadm ${f1(bTargets.ms / 1000)} s) | ${f1(scratch.ms / bTotal)}× |`,
  );
  line(
    `| 2. startup() again, all exist (adopt) | ${f1(adopt.ms / 1000)} s | ${f1(adopt.ms / N)} ms | — (a shell loop cannot adopt) | — |`,
  );
  line(
    `| 3. reconcileMachine() after a CHAP change, ${N} exist (median of ${CHANGES}, min–max) | ${f0(median(chMs))} ms (${f0(Math.min(...chMs))}–${f0(Math.max(...chMs))}) | — | ${f0(median(bChanges))} ms (3 tgtadm) | ${f1(median(chMs) / median(bChanges))}× |`,
  );
  line(
    `| 3b. reconcileMachine() with nothing changed (median of ${CHANGES}) | ${f0(median(noMs))} ms | — | — | — |`,
  );
  line();

  line("### Where the time goes");
  line();
  const perPhase = [
    { name: "1. scratch", c: scratch.c, ms: scratch.ms, per: N },
    { name: "2. adopt", c: adopt.c, ms: adopt.ms, per: N },
    { name: "3. one CHAP change", c: changeRuns[0]!.c, ms: changeRuns[0]!.ms, per: 1 },
    { name: "3b. no change", c: noopRuns[0]!.c, ms: noopRuns[0]!.ms, per: 1 },
  ];
  line(
    "| phase | child processes | tgtadm calls (per target) | tgtadm wall ms (share) | overlay create calls / ms | conf files written | rest ms (Node: parsing, SQLite, fs) |",
  );
  line("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const p of perPhase) {
    const tg = sum(p.c.tgtadm);
    const tgMs = sumMs(p.c.tgtadm);
    const cr = p.c.overlay.get("create") ?? { count: 0, ms: 0 };
    const persisted = p.c.logs.filter((l) => l.changes?.includes("persisted")).length;
    const other = p.ms - tgMs - cr.ms;
    line(
      `| ${p.name} | ${sum(p.c.spawns)} | ${tg} (${f1(tg / p.per)}) | ${f0(tgMs)} (${f0((100 * tgMs) / p.ms)} %) | ${cr.count} / ${f0(cr.ms)} | ${persisted} | ${f0(other)} |`,
    );
  }
  line();
  line("tgtadm calls by op and mode (count, total ms):");
  line();
  line(`| op mode | 1. scratch | 2. adopt | 3. one CHAP change | 3b. no change |`);
  line("| --- | ---: | ---: | ---: | ---: |");
  const keys = [...new Set(perPhase.flatMap((p) => [...p.c.tgtadm.keys()]))].sort();
  for (const key of keys) {
    const cell = (c: Counters) => {
      const t = c.tgtadm.get(key);
      return t ? `${t.count} (${f0(t.ms)})` : "—";
    };
    line(`| ${key} | ${perPhase.map((p) => cell(p.c)).join(" | ")} |`);
  }
  line();
  const shows = scratch.c.showTargetMs;
  const head = shows.slice(0, 20);
  const tail = shows.slice(-20);
  const starts = scratch.c.createStarts;
  const gaps = starts.slice(1).map((s, i) => s - starts[i]!);
  line(
    `- \`show --mode target\` lists every target: its output is ${f0(showBytes / 1024)} KiB with ${N} targets; in phase 1 it took a median ${f2(median(head))} ms for the first 20 targets and ${f2(median(tail))} ms for the last 20 (baseline tgtd with ${N}: ${f2(median(bShow))} ms; \`show --mode account\`: ${f2(median(bSingle))} ms).`,
  );
  line(
    `- Per target in phase 1 (time between overlay creates): median ${f1(median(gaps.slice(0, 20)))} ms for the first 20, ${f1(median(gaps.slice(-20)))} ms for the last 20.`,
  );
  const cr = scratch.c.overlay.get("create") ?? { count: 1, ms: 0 };
  line(
    `- Overlay clone (reflink + fsyncs): ${f2(cr.ms / cr.count)} ms per target; baseline \`cp --reflink=always\` in bash: ${f2(bClones.ms / N)} ms per clone (no fsync).`,
  );
  line(
    `- Conf file writes (writeFileAtomic: temp + fsync + rename + folder fsync) alone: ${f2(atomic.ms / N)} ms each, ${f1(atomic.ms / 1000)} s for ${N}.`,
  );
  line(
    `- Baseline per target: ${f1(bTargets.ms / N)} ms for 6 tgtadm (${f2(bTargets.ms / N / 6)} ms per tgtadm, from bash).`,
  );
  const perSpawnNode = nodeSpawn.ms / SPAWNS;
  const tgCalls = sum(scratch.c.tgtadm);
  line(
    `- One cheap tgtadm call (\`show --mode sys\`), mean of ${SPAWNS}: ${f2(perSpawnNode)} ms from Node's execFile, ${f2(bashSpawn.ms / SPAWNS)} ms from bash. At the Node price, phase 1's ${tgCalls} calls cost ~${f1((tgCalls * perSpawnNode) / 1000)} s of its ${f1(scratch.ms / 1000)} s before tgtd does any work.`,
  );
  const spawnsBy = (c: Counters) =>
    [...c.spawns]
      .sort((a, b) => b[1].count - a[1].count)
      .map(([f, t]) => `${f} ${t.count}`)
      .join(", ");
  line(
    `- Child processes in phase 1 by program: ${spawnsBy(scratch.c)}; phase 2: ${spawnsBy(adopt.c)}; phase 3: ${spawnsBy(changeRuns[0]!.c)}.`,
  );
  line();
  line("### Checks");
  line();
  for (const c of checks) line(`- [${c.ok ? "x" : " "}] ${c.what}`);
  console.log(out.join("\n"));
  if (checks.some((c) => !c.ok)) process.exitCode = 1;
}

try {
  await main();
} catch (err) {
  console.error(err);
  process.exitCode = 1;
} finally {
  await cleanupAll();
}
