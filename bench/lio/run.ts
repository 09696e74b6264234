/**
 * LIO in the Debian 12 guest (test/guest/harness: Debian's kernel, real LIO and device-mapper),
 * in one guest boot:
 *
 *   node --import tsx bench/lio/run.ts [--machines 200] [--storm 50] [--image-mib 128]
 *                                      [--skip-targets] [--skip-cache] [--skip-session]
 *                                      [--tcli-minutes M] [--remove R] [--read-ahead-kb K]
 *
 * Root (the harness builds the guest with mmdebstrap). Under TCG on a shared 2-core VM it
 * takes the better part of an hour: run it in the background. Prints Markdown on stdout,
 * progress on stderr; bench/lio/RESULTS.md records a run.
 *
 * 1. Targets: `--machines` targets applied from scratch by bootfleet's LioDriver (the driver
 *    directly, one machine after another, as Reconciler.startup() calls it, in one node
 *    process: the daemon's), then all removed through the driver; then the same targets by
 *    targetcli one target at a time (one `targetcli` per target reading that target's
 *    commands on stdin, saving saveconfig.json on exit, its default), then cleared. After
 *    each apply pass the same check reads configfs: every target as specified.
 * 2. Shared cache: `--storm` dm-snapshot machines over one `--image-mib` image version (made by
 *    bootfleet's dm-snapshot driver), caches dropped, then (a) one machine reads the recorded
 *    Debian boot set clipped to the image, (b) all machines at once read it, (c) all read
 *    their whole disk; each with O_DIRECT, as LIO's block backstore reads. Bytes from vdb (the
 *    disk under the image's XFS, /proc/diskstats) and the image's pages in RAM (fincore).
 *    Then warmed: caches dropped, the daemon's warming of the version's boot set
 *    (src/iscsi/warm.ts), then one machine's boot set (the first PC at 9 am) and all machines
 *    at once, caches kept: the disk bytes of warming and storm together, and the first boot's
 *    seconds cold against warm. `--read-ahead-kb K` sets vdb's read-ahead (the image file's)
 *    before all of it; the default leaves the kernel's.
 *    The other side: as many reflink clones of the image, read buffered as LIO's fileio
 *    backstore reads them, the boot set at once.
 *    Caches are dropped in the guest and on the host (vdb is a host file) before a cold run.
 */

import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { shareAgent } from "../../test/guest/harness/agent-cli.js";
import { bootGuest, type Guest } from "../../test/guest/harness/guest.js";
import { benchArgs } from "../lib/args.js";
import { machineNames, PORTAL } from "./machines.js";

const cli = benchArgs();
const opt = cli.positiveInt;
const N = opt("machines", 200);
const STORM = opt("storm", 50);
const IMAGE_MIB = opt("image-mib", 128);
const IMAGE_BYTES = IMAGE_MIB * 2 ** 20;
if (N > 999 || STORM > 999) throw new Error("at most 999 machines (pc-NNN names)");
const doTargets = !cli.has("skip-targets");
const doCache = !cli.has("skip-cache");
const doSession = !cli.has("skip-session");
/**
 * Stop the one-process-per-target targetcli pass after this many minutes (0: never). Under
 * TCG on a loaded host targetcli takes ~25 s a target, so 200 take more than an hour; cut
 * short, it has done k targets, and bootfleet's time for its own first k is the fair match.
 */
const TCLI_MINUTES = cli.has("tcli-minutes") ? opt("tcli-minutes", 60) : 0;
/**
 * How many of bootfleet's targets to remove through LioDriver.remove (timed); the rest go by
 * `targetcli clearconfig`. Each remove walks every other target's LUNs (is the storage
 * object still used?): O(N^2) in all, more than 16 minutes for 200 under TCG on a loaded host.
 */
const REMOVE = Math.min(N, opt("remove", N));
/** vdb's read-ahead in KiB, which the image file's reads get (unset: the kernel's default). */
const READ_AHEAD_KB = cli.has("read-ahead-kb") ? opt("read-ahead-kb", 128) : undefined;

const HERE = import.meta.dirname;
const BOOT_SET = join(HERE, "../storm/boot-set/debian-12-bios.csv");
const BACKING = "/srv/lio";
const ROOT = "/srv/bf";
const GOLDEN = `${ROOT}/images/golden.raw`;
/** One guest step under TCG on a loaded host: up to an hour for 200 targetcli runs. */
const STEP_MS = 90 * 60_000;

const t0 = Date.now();
const log = (m: string) =>
  process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(5)} s] ${m}\n`);
const mib = (b: number) => (b / 2 ** 20).toFixed(1);
const sec = (ms: number) => (ms / 1000).toFixed(1);

const cleanups: (() => unknown)[] = [];
async function cleanupAll() {
  for (const fn of cleanups.reverse()) {
    try {
      await fn();
    } catch (err) {
      log(`cleanup step failed: ${String(err)}`);
    }
  }
}
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    log(`${sig}: stopping the guest`);
    void cleanupAll().then(() => process.exit(130));
  });
}

function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

let jobs = 0;
/**
 * A long guest command as a systemd unit, polled for its end: during heavy work under TCG the
 * guest agent may not answer for a while, and a missed poll is only retried. Its stdout.
 */
async function heavy(g: Guest, script: string, progress?: string): Promise<string> {
  const tag = `/root/bf-bench-${++jobs}`;
  // systemd expands ${NAME} in a unit's command line (systemd-run in Debian 12's v252 has
  // no --expand-environment=no): `$$` is its escape for a `$` that bash must see, or
  // ${EPOCHREALTIME/./} arrives empty and every timing reads 0.
  const command = `(${script}) >${tag}.out 2>${tag}.err; echo $? >${tag}.rc`.replaceAll(
    "$",
    "$$$$",
  );
  await g.sh(
    `systemd-run --quiet --collect --unit=bf-bench-${process.pid}-${jobs} /bin/bash -c ${shq(command)}`,
  );
  const deadline = Date.now() + STEP_MS;
  let last: unknown;
  let polls = 0;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 5000));
    try {
      // Every minute, where a long step is: a run cut short still tells how far it got.
      if (progress && ++polls % 12 === 0) log(`  ${(await g.sh(progress)).trim()}`);
      const rc = await g.exec(["cat", `${tag}.rc`], { timeoutMs: 60_000 });
      if (rc.code !== 0) continue;
      const out = await g.sh(`cat ${tag}.out`);
      if (rc.stdout.trim() !== "0") {
        const err = await g.sh(`tail -c 4000 ${tag}.err`);
        throw new Error(`guest job failed (${rc.stdout.trim()}): ${script}\n${out}\n${err}`);
      }
      return out;
    } catch (err) {
      if (err instanceof Error && err.message.startsWith("guest job failed")) throw err;
      last = err;
    }
  }
  throw new Error(`guest job did not end in ${STEP_MS} ms: ${script}\n${String(last)}`);
}

const agent = async <T>(g: Guest, ...args: string[]): Promise<T> =>
  JSON.parse(await heavy(g, `/usr/local/bin/node /root/agent.cjs ${args.join(" ")}`)) as T;

/** targetcli's commands for one machine: what LioDriver.apply makes of the same spec. */
function targetcliScript(i: number, password: string): string {
  const m = machineNames(i);
  const tpg = `/iscsi/${m.target}/tpg1`;
  return `${[
    `/backstores/fileio create name=${m.storageObject} file_or_dev=${BACKING}/${m.file} size=${m.sizeBytes} write_back=true wwn=${m.wwn}`,
    `/backstores/fileio/${m.storageObject} set attribute emulate_tpu=1`,
    `/iscsi create ${m.target}`,
    `${tpg} set attribute authentication=1 generate_node_acls=0 cache_dynamic_acls=0 demo_mode_write_protect=1`,
    `${tpg} set parameter AuthMethod=CHAP`,
    `${tpg}/portals create ${PORTAL.address} ${PORTAL.port}`,
    `${tpg}/luns create /backstores/fileio/${m.storageObject} lun=0`,
    `${tpg}/acls create ${m.initiator}`,
    `${tpg}/acls/${m.initiator} set auth userid=${m.chapUser} password=${password}`,
    "exit",
  ].join("\n")}\n`;
}

interface Timed {
  ms: number;
  /** Time in configfs operations; the rest of an apply is saveconfig.json. */
  configfsMs: number;
  top: string[];
  medianMs: number;
  p90Ms: number;
  firstTenMeanMs: number;
  lastTenMeanMs: number;
  /** Each apply's milliseconds, in order. */
  each: number[];
}
interface Check {
  liveTargets: number;
  savedTargets: number;
  savedStorageObjects: number;
  holds: Record<string, number>;
}

/** Sectors read from vdb (the disk under the image file system), /proc/diskstats field 6. */
async function vdbBytesRead(g: Guest): Promise<number> {
  const line = (await g.sh("cat /proc/diskstats"))
    .split("\n")
    .find((l) => l.trim().split(/\s+/)[2] === "vdb");
  if (!line) throw new Error("vdb is not in /proc/diskstats");
  return Number(line.trim().split(/\s+/)[5]) * 512;
}

async function pagesCached(g: Guest, files: string[]): Promise<number> {
  const out = await g.sh(`fincore --bytes --noheadings --output RES ${files.join(" ")}`, {
    timeoutMs: 300_000,
  });
  return out
    .split("\n")
    .filter(Boolean)
    .reduce((a, l) => a + Number(l.trim()), 0);
}

interface Reading {
  what: string;
  diskBytes: number;
  cachedBytes: number;
  readBytes: number;
  seconds: number;
}

/**
 * The guest's caches and the host's: vdb is a file on the host, so a guest read the guest's
 * cache misses would otherwise come from the host's RAM, and a cold first boot would not be.
 */
async function dropCaches(g: Guest): Promise<void> {
  await g.sh("sync && echo 3 > /proc/sys/vm/drop_caches", { timeoutMs: 300_000 });
  execFileSync("sync");
  writeFileSync("/proc/sys/vm/drop_caches", "3");
}

/**
 * Runs the replayer (after dropping the caches unless `keepCaches`), and reads what vdb
 * delivered and what stays cached.
 */
async function storm(
  g: Guest,
  what: string,
  replayArgs: string,
  cachedFiles: string[],
  keepCaches = false,
): Promise<Reading> {
  if (!keepCaches) await dropCaches(g);
  const before = await vdbBytesRead(g);
  const r = JSON.parse(await heavy(g, `python3 /root/replay.py ${replayArgs}`)) as {
    bytes: number;
    seconds: number;
  };
  const diskBytes = (await vdbBytesRead(g)) - before;
  const cachedBytes = await pagesCached(g, cachedFiles);
  log(
    `${what}: ${mib(r.bytes)} MiB read by the machines in ${r.seconds.toFixed(1)} s, ${mib(diskBytes)} MiB from vdb, ${mib(cachedBytes)} MiB cached`,
  );
  return { what, diskBytes, cachedBytes, readBytes: r.bytes, seconds: r.seconds };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    console.error("bench/lio/run.ts needs root (the guest image is built with mmdebstrap)");
    process.exit(2);
  }
  const share = mkdtempSync(join(tmpdir(), "bf-lio-bench-"));
  cleanups.push(() => rmSync(share, { recursive: true, force: true }));
  await shareAgent(share, join(HERE, "agent.ts"));
  copyFileSync(join(HERE, "replay.py"), join(share, "replay.py"));
  const passwords = Array.from({ length: N }, () => `Pw-${randomBytes(9).toString("hex")}`);
  writeFileSync(join(share, "passwords.json"), JSON.stringify(passwords), { mode: 0o600 });
  mkdirSync(join(share, "tcli"));
  for (let i = 1; i <= N; i++) {
    const name = machineNames(i).file.replace(".img", ".txt");
    writeFileSync(join(share, "tcli", name), targetcliScript(i, passwords[i - 1]!), {
      mode: 0o600,
    });
  }
  // The recorded Debian boot set, clipped to the image.
  const csv = readFileSync(BOOT_SET, "utf8").split("\n");
  const clipped = csv.filter((l, i) => {
    if (i === 0) return true;
    const [o, n] = l.split(",").map(Number);
    return o !== undefined && n !== undefined && o + n <= IMAGE_BYTES;
  });
  writeFileSync(join(share, "bootset.csv"), `${clipped.join("\n")}\n`);

  const g = await bootGuest(
    { teardown: (fn: () => unknown) => cleanups.push(fn) } as unknown as Parameters<
      typeof bootGuest
    >[0],
    {
      shareDir: share,
      extraDisks: [{ sizeMiB: 4096 }],
      // Room for 50 reflink clones' boot sets in the page cache on the other side.
      memoryMiB: 3072,
      bootTimeoutMs: 1_800_000,
      log,
    },
  );
  const kernel = (await g.sh("uname -r")).trim();
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's format, not JS
  const tcliVersion = (await g.sh("dpkg-query -W -f '${Version}' targetcli-fb")).trim();
  await g.sh(
    `cp /host/node /usr/local/bin/node && cp /host/agent.cjs /host/replay.py /root/
     cp -r /host/tcli /root/tcli && cp /host/passwords.json /host/bootset.csv /root/
     modprobe target_core_mod && modprobe iscsi_target_mod && modprobe target_core_file
     mkdir -p ${BACKING} && for i in $(seq 1 ${N}); do truncate -s 1G $(printf '${BACKING}/pc-%03d.img' $i); done`,
    { timeoutMs: 600_000 },
  );
  const out: string[] = [];
  out.push(
    `# bench/lio (${new Date().toISOString()})`,
    "",
    `Guest: Debian 12, kernel ${kernel}, targetcli-fb ${tcliVersion}, QEMU TCG, 2 vCPUs, 3 GiB; host load at start ${(
      await import("node:os")
    )
      .loadavg()
      .map((x) => x.toFixed(1))
      .join(" ")}.`,
    "",
  );

  // The cache part first: it is the shorter, and the targetcli pass, last, the longest.
  if (doCache) await cachePart(g, out, clipped);
  if (doTargets) await targetsPart(g, out, N);
  console.log(out.join("\n"));
}

async function targetsPart(g: Guest, out: string[], N: number): Promise<void> {
  // Warm both tools' files into the guest's page cache: neither pass pays the first load.
  log("warming node and targetcli");
  await heavy(g, "/usr/local/bin/node /root/agent.cjs lio-check 0 /srv/lio && targetcli ls");
  log(`bootfleet LioDriver: applying ${N} targets`);
  // Timed in the guest too, from before node starts to its exit.
  const [applyJson, applyWall] = (
    await heavy(
      g,
      `a=\${EPOCHREALTIME/./}; /usr/local/bin/node /root/agent.cjs lio-apply ${N} ${BACKING} /root/passwords.json; echo $(( (\${EPOCHREALTIME/./} - a) / 1000 ))`,
    )
  )
    .trim()
    .split("\n");
  const lioApply = JSON.parse(applyJson ?? "") as Timed;
  const lioWallMs = Number(applyWall);
  log(`bootfleet: ${sec(lioApply.ms)} s in the process (${sec(lioWallMs)} s with node's start)`);
  log(`  of which configfs ${sec(lioApply.configfsMs)} s: ${lioApply.top.join("; ")}`);
  const lioCheck = await agent<Check>(g, "lio-check", String(N), BACKING);
  const lioSave = (await g.sh("wc -c < /etc/rtslib-fb-target/saveconfig.json")).trim();
  log(`bootfleet check: ${JSON.stringify(lioCheck)}`);
  const lioRemove = await agent<Timed>(g, "lio-remove", String(REMOVE));
  log(
    `bootfleet: removed ${REMOVE} in ${sec(lioRemove.ms)} s, of which configfs ${sec(lioRemove.configfsMs)} s; each ${lioRemove.each.map((x) => x.toFixed(0)).join(" ")} ms`,
  );
  const afterRemove = await agent<Check>(g, "lio-check", "0", BACKING);
  if (REMOVE < N) await heavy(g, "targetcli clearconfig confirm=True");
  const leftObjects = (await g.sh("ls /sys/kernel/config/target/core")).trim();

  await g.sh("rm -f /etc/rtslib-fb-target/saveconfig.json");
  // The portal is the spec's address; targetcli's default would add 0.0.0.0:3260 too.
  await heavy(g, "targetcli set global auto_add_default_portal=false");

  log(`targetcli: applying ${N} targets, one targetcli per target`);
  const tcli = await targetcliPass(
    g,
    N,
    // bash's clock, not date(1): no process of its own inside the timed loop.
    `cd /root/tcli && : >/root/tcli.times && start=\${EPOCHREALTIME/./}
     for f in pc-*.txt; do
       ${TCLI_MINUTES > 0 ? `[ $(( (\${EPOCHREALTIME/./} - start) / 1000 )) -ge ${TCLI_MINUTES * 60_000} ] && break` : ""}
       a=\${EPOCHREALTIME/./}; targetcli <"$f" >>/root/tcli.log 2>&1 || exit 1
       echo $(( (\${EPOCHREALTIME/./} - a) / 1000 )) >>/root/tcli.times
     done
     echo $(( (\${EPOCHREALTIME/./} - start) / 1000 ))`,
    "/root/tcli.log",
    `awk '{ s += $1 } END { printf "targetcli: %d of ${N} targets done, %.1f s so far", NR, s / 1000 }' /root/tcli.times`,
    doSession,
  );
  const tcliMs = tcli.ms;
  const tcliCheck = tcli.check;
  const tcliEach = (await g.sh("cat /root/tcli.times")).trim().split("\n").map(Number);
  // Cut short (--tcli-minutes): targetcli made k targets; bootfleet's first k are the match.
  const k = tcliEach.length;
  const lioFirstK = lioApply.each.slice(0, k).reduce((a, b) => a + b, 0);

  type Pass = Awaited<ReturnType<typeof targetcliPass>>;
  const report = (session: Pass | undefined): string[] => {
    const ss = (f: (x: Pass) => string) => (session ? f(session) : "not run");
    const sorted = [...tcliEach].sort((a, b) => a - b);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    return [
      `## Apply ${N} machines' targets from scratch`,
      "",
      "| | bootfleet LioDriver | targetcli, one target at a time (one process each) | targetcli, one session, saveconfig after each target |",
      "|---|---|---|---|",
      `| all ${N} targets | ${sec(lioApply.ms)} s (${sec(lioWallMs)} s with node's start) | ${k < N ? `cut at ${TCLI_MINUTES} min: ${k} of ${N} done in ${sec(tcliMs)} s` : `${sec(tcliMs)} s`} | ${ss((x) => `${sec(x.ms)} s`)} |`,
      ...(k < N ? [`| the first ${k} targets | ${sec(lioFirstK)} s | ${sec(tcliMs)} s | — |`] : []),
      `| one target, median / p90 | ${lioApply.medianMs.toFixed(0)} / ${lioApply.p90Ms.toFixed(0)} ms | ${sorted[Math.floor(sorted.length / 2)]} / ${sorted[Math.floor(sorted.length * 0.9)]} ms | — |`,
      `| first 10 / last 10, mean | ${lioApply.firstTenMeanMs.toFixed(0)} / ${lioApply.lastTenMeanMs.toFixed(0)} ms | ${mean(tcliEach.slice(0, 10)).toFixed(0)} / ${mean(tcliEach.slice(-10)).toFixed(0)} ms | — |`,
      `| saveconfig.json after | ${lioSave} bytes, ${lioCheck.savedTargets} targets, ${lioCheck.savedStorageObjects} objects | ${tcli.save} bytes, ${tcliCheck.savedTargets} targets, ${tcliCheck.savedStorageObjects} objects | ${ss((x) => `${x.save} bytes, ${x.check.savedTargets} targets, ${x.check.savedStorageObjects} objects`)} |`,
      `| live targets in configfs | ${lioCheck.liveTargets} | ${tcliCheck.liveTargets} | ${ss((x) => String(x.check.liveTargets))} |`,
      `| targetcli output lines with error/unknown/failed | — | ${tcli.errors} | ${ss((x) => x.errors)} |`,
      "",
      k < N
        ? `Ratio bootfleet / targetcli one target at a time, the first ${k} targets each: **${(lioFirstK / tcliMs).toFixed(3)}**; bootfleet's all ${N} against targetcli's first ${k} (a bound: targetcli's ${N} take longer): ${(lioApply.ms / tcliMs).toFixed(3)} (${(lioWallMs / tcliMs).toFixed(3)} counting node's start).`
        : `Ratio bootfleet / targetcli one target at a time: **${(lioApply.ms / tcliMs).toFixed(3)}** (${(lioWallMs / tcliMs).toFixed(3)} counting node's start); / targetcli in one session: ${ss((x) => `${(lioApply.ms / x.ms).toFixed(3)} (${(lioWallMs / x.ms).toFixed(3)})`)}.`,
      "",
      REMOVE < N
        ? `Removing the first ${REMOVE} of ${N} through the driver: ${sec(lioRemove.ms)} s (median ${lioRemove.medianMs.toFixed(0)} ms each); then configfs holds ${afterRemove.liveTargets} targets, saveconfig ${afterRemove.savedTargets}; the rest cleared by targetcli clearconfig.`
        : `Removing the ${N} through the driver: ${sec(lioRemove.ms)} s; then configfs holds ${afterRemove.liveTargets} targets, saveconfig ${afterRemove.savedTargets}, core/ holds: ${leftObjects || "nothing"}.`,
      "",
      "Each fact, for how many targets it holds (bootfleet / targetcli per target / targetcli session):",
      "",
      ...Object.keys(lioCheck.holds).map(
        (k) =>
          `- ${k}: ${lioCheck.holds[k]} / ${tcliCheck.holds[k] ?? 0} / ${ss((x) => String(x.check.holds[k] ?? 0))}`,
      ),
      "",
    ];
  };
  // The required comparison is reported before the extra pass can run out of time.
  process.stderr.write(`${report(undefined).join("\n")}\n`);
  // A harder opponent, after: one targetcli session for all, saveconfig after each target
  // (no Python start per target).
  if (doSession) log(`targetcli: applying ${N} targets in one session, saveconfig after each`);
  const session = !doSession
    ? undefined
    : await targetcliPass(
        g,
        N,
        `cd /root/tcli && for f in pc-*.txt; do grep -v '^exit$' "$f"; echo saveconfig; done >/root/session.txt
     echo exit >>/root/session.txt
     start=\${EPOCHREALTIME/./}; targetcli </root/session.txt >>/root/tcli-session.log 2>&1 || exit 1
     echo $(( (\${EPOCHREALTIME/./} - start) / 1000 ))`,
        "/root/tcli-session.log",
        undefined,
        false,
      );

  out.push(...report(session));
  process.stderr.write(`${out.join("\n")}\n`);
}

async function cachePart(g: Guest, out: string[], clipped: string[]): Promise<void> {
  const bootSetBytes = clipped.slice(1).reduce((a, l) => a + Number(l.split(",")[1]), 0);
  const bootSetDistinct = distinctBytes(clipped.slice(1));
  const ids = Array.from({ length: STORM }, (_, i) => `m${i + 1}`);
  const disks = ids.map((id) => `/dev/mapper/bfsnap-${id}`);
  await g.sh(
    `mkfs.xfs -q -f -m reflink=1 /dev/vdb && mkdir -p ${ROOT} && mount /dev/vdb ${ROOT}
     mkdir -p ${ROOT}/images ${ROOT}/overlays ${ROOT}/reflink
     dd if=/dev/urandom of=${GOLDEN} bs=1M count=${IMAGE_MIB} status=none && sync
     cp /root/bootset.csv ${GOLDEN}.bootset.csv
     ${READ_AHEAD_KB === undefined ? "" : `echo ${READ_AHEAD_KB} > /sys/block/vdb/queue/read_ahead_kb`}`,
    { timeoutMs: 600_000 },
  );
  const readAheadKb = Number(await g.sh("cat /sys/block/vdb/queue/read_ahead_kb"));
  log(`dm-snapshot: ${STORM} machines over ${IMAGE_MIB} MiB`);
  const created = await agent<string[]>(g, "snap-create", GOLDEN, ...ids);
  if (created.join() !== disks.join()) throw new Error(`snap-create made ${created.join()}`);
  const loops = (await g.sh("losetup --list --noheadings --output BACK-FILE"))
    .split("\n")
    .filter((l) => l.trim() === GOLDEN).length;
  const one = await storm(g, "1 machine, boot set", `--direct /root/bootset.csv ${disks[0]}`, [
    GOLDEN,
  ]);
  const all = await storm(
    g,
    `${STORM} machines at once, boot set`,
    `--direct /root/bootset.csv ${disks.join(" ")}`,
    [GOLDEN],
  );
  // Warmed, as the daemon does at start and when a version becomes current; then the first
  // PC, then the whole room, the caches kept.
  await dropCaches(g);
  const beforeWarm = await vdbBytesRead(g);
  const warmed = await agent<{ bytes: number; ms: number }>(g, "warm", GOLDEN);
  const warmDisk = (await vdbBytesRead(g)) - beforeWarm;
  log(`warmed: ${mib(warmed.bytes)} MiB in ${sec(warmed.ms)} s, ${mib(warmDisk)} MiB from vdb`);
  const oneWarm = await storm(
    g,
    "1 machine after warming",
    `--direct /root/bootset.csv ${disks[0]}`,
    [GOLDEN],
    true,
  );
  const allWarm = await storm(
    g,
    `${STORM} machines at once after that`,
    `--direct /root/bootset.csv ${disks.join(" ")}`,
    [GOLDEN],
    true,
  );
  const warmTotal = warmDisk + oneWarm.diskBytes + allWarm.diskBytes;
  const clones = ids.map((id) => `${ROOT}/reflink/${id}.img`);
  await g.sh(clones.map((c) => `cp --reflink=always ${GOLDEN} ${c}`).join(" && "), {
    timeoutMs: 600_000,
  });
  const reflink = await storm(
    g,
    `${STORM} reflink clones at once, boot set, buffered`,
    `/root/bootset.csv ${clones.join(" ")}`,
    clones,
  );
  // Last, the longest: every machine reads its whole disk.
  const whole = await storm(
    g,
    `${STORM} machines at once, whole disk`,
    `--direct --whole ${IMAGE_BYTES} /root/bootset.csv ${disks.join(" ")}`,
    [GOLDEN],
  );
  await agent(g, "snap-delete", ...ids);
  const r = (x: Reading, over: number) => (x.diskBytes / over).toFixed(3);
  out.push(
    `## ${STORM} machines over one ${IMAGE_MIB} MiB image version`,
    "",
    `Boot set: the recorded Debian 12 BIOS boot (bench/storm/boot-set/debian-12-bios.csv) clipped to the image's ${IMAGE_MIB} MiB: ${clipped.length - 1} reads, ${mib(bootSetBytes)} MiB requested, ${mib(bootSetDistinct)} MiB distinct. Image loop devices: ${loops} for ${STORM} machines. vdb read-ahead: ${readAheadKb} KiB.`,
    "",
    "| run (caches dropped before each, kept for the rows after warming) | read by the machines | from vdb | from vdb / boot set (distinct) | image pages in RAM | in RAM / boot set | seconds |",
    "|---|---|---|---|---|---|---|",
    ...[one, all, oneWarm, allWarm, reflink].map(
      (x) =>
        `| ${x.what} | ${mib(x.readBytes)} MiB | ${mib(x.diskBytes)} MiB | ${r(x, bootSetDistinct)} | ${mib(x.cachedBytes)} MiB | ${(x.cachedBytes / bootSetDistinct).toFixed(3)} | ${x.seconds.toFixed(1)} |`,
    ),
    "",
    `Warmed (caches dropped, then the daemon's warming, then the rows "after warming", caches kept): warming read ${mib(warmed.bytes)} MiB in ${sec(warmed.ms)} s, ${mib(warmDisk)} MiB from vdb; warming and all ${STORM + 1} boots together ${mib(warmTotal)} MiB from vdb = **${(warmTotal / bootSetDistinct).toFixed(3)}** x the boot set. First boot: cold ${one.seconds.toFixed(2)} s, warm ${oneWarm.seconds.toFixed(2)} s (${(oneWarm.seconds / one.seconds).toFixed(2)}).`,
    "",
    `Whole disks: ${STORM} machines at once read ${mib(whole.readBytes)} MiB; vdb delivered ${mib(whole.diskBytes)} MiB = **${r(whole, IMAGE_BYTES)}** x the image; image pages in RAM ${mib(whole.cachedBytes)} MiB = ${(whole.cachedBytes / IMAGE_BYTES).toFixed(3)} x the image (${whole.seconds.toFixed(1)} s).`,
    "",
  );
  process.stderr.write(`${out.join("\n")}\n`);
}

/** Runs one targetcli pass (a script printing its milliseconds), checks it, clears it. */
async function targetcliPass(
  g: Guest,
  N: number,
  script: string,
  logFile: string,
  progress?: string,
  /** Clear it after: another pass follows (clearconfig of 200 targets takes minutes). */
  clear = true,
) {
  const ms = Number((await heavy(g, script, progress)).trim());
  const errors = (await g.sh(`grep -ciE 'error|no such|unknown|failed' ${logFile} || true`)).trim();
  log(`targetcli: ${sec(ms)} s; output lines with an error: ${errors}`);
  const check = await agent<Check>(g, "lio-check", String(N), BACKING);
  const save = (await g.sh("wc -c < /etc/rtslib-fb-target/saveconfig.json")).trim();
  if (clear)
    await heavy(
      g,
      "targetcli clearconfig confirm=True && rm -f /etc/rtslib-fb-target/saveconfig.json",
    );
  return { ms, errors, check, save };
}

/** Bytes covered by `offset,length` lines, overlaps counted once. */
function distinctBytes(lines: string[]): number {
  const rs = lines
    .filter(Boolean)
    .map((l) => l.split(",").map(Number) as [number, number])
    .sort((a, b) => a[0] - b[0]);
  let total = 0;
  let end = -1;
  for (const [o, n] of rs) {
    const from = Math.max(o, end);
    if (o + n > from) total += o + n - from;
    end = Math.max(end, o + n);
  }
  return total;
}

try {
  await main();
} catch (err) {
  log(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exitCode = 1;
} finally {
  await cleanupAll();
}
