// Proxy-DHCP benchmark: the real bootfleetd against dnsmasq in proxy mode, answering PXE
// DHCPDISCOVERs of 1,000 distinct MACs sent by loadgen.py from a client namespace.
//
//   node --import tsx bench/dhcp/run.ts [--reps 3] [--ref HEAD | --refs A,B] [--macs 1000] [--window 32]
//        [--rates 250,500,1000,2000,4000] [--step-seconds 2] [--cpu-prof DIR]
//        [--cpu-prof-interval US] [--json FILE]
//
// Needs root, iproute2, python3 and dnsmasq (dnsmasq-base). Layout: a server namespace with
// br0 (10.99.0.1/24), and a client namespace whose eth0 (no address, as a PXE ROM before its
// lease) is joined to br0 by a veth pair. One server runs at a time, in the same namespace, and
// the two alternate (bootfleet, dnsmasq, bootfleet, ...) for --reps rounds. Per round:
//   probe   one DISCOVER with a MAC outside the set: the server answers at all, and its reply
//   new     window pass over the 1,000 MACs, all unknown (bootfleet: fresh database)
//   again   the same MACs again (bootfleet has recorded only what its discovery limit let in)
//   known   bootfleet only: the MACs it did not record are added to its database as the
//           discovery would have (recordSeen), then the same pass, now every MAC is known
//   stale   bootfleet only: every machine's last_seen set an hour back (a morning's boot
//           storm: PCs last seen the day before), then the same pass; each request now
//           also updates last_seen, where "known" (seen a second ago) skips it
//   ramp    open loop over the same MACs at each of --rates for --step-seconds
// --refs A,B: both builds in the same run, each round A, dnsmasq, B (B first in every second
// round), so each is compared with the dnsmasq runs of the same minutes: an A/B pair whose
// two sides meet the same moments of a shared VM. Reported per ref, and round by round.
// bootfleet is built from a `git archive` of --ref into a temporary folder (tsc with the
// project's tsconfig.build.json, then bin/bootfleetd.js), so helpers editing src/ in this
// checkout neither break the build nor change what is measured. Everything made here (both
// namespaces, the snapshot, data folders) is removed at the end; servers are stopped by pid.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { basename, join, resolve } from "node:path";
import { benchArgs } from "../lib/args.js";
import { topOfProfile } from "../lib/cpu-profile.js";
import {
  deleteNetns,
  makeBridgedLan,
  type NsProcess,
  spawnInNetns,
  stopProcess,
} from "../lib/netns.js";
import { processCpuSeconds } from "../lib/proc.js";
import { buildSnapshot as buildRefSnapshot } from "../lib/snapshot.js";

const args = benchArgs();
const opt = args.str;
const REPS = Number(opt("reps", "3"));
const REFS = opt("refs", "")
  .split(",")
  .filter((r) => r !== "");
if (REFS.length === 0) REFS.push(opt("ref", "HEAD"));
const MACS = Number(opt("macs", "1000"));
const WINDOW = Number(opt("window", "32"));
const RATES = opt("rates", "250,500,1000,2000,4000").split(",").map(Number);
const STEP_SECONDS = Number(opt("step-seconds", "2"));
const CPU_PROF = args.has("cpu-prof") ? resolve(opt("cpu-prof", "bench-dhcp-prof")) : "";
// V8 samples every 1,000 µs by default: a pass of 1,000 offers lasts ~100 ms, 100 samples.
const CPU_PROF_INTERVAL = opt("cpu-prof-interval", "");
const JSON_OUT = opt("json", "");
// An experiment, not the product: rewrites the built transport's default pause between two
// queued replies (1 ms), to see how much of bootfleet's rate that pause costs.
const PATCH_SEND_INTERVAL = opt("patch-send-interval", "");
const TIMEOUT_S = 1.0;
const PROBE_MAC = 0xf00000;

const HERE = new URL(".", import.meta.url).pathname;
const REPO = resolve(HERE, "../..");
const LOADGEN = join(HERE, "loadgen.py");
const SERVER_NS = `bf-dhcpb-${process.pid}`;
const CLIENT_NS = `bf-dhcpb-${process.pid}-c`;
const OUTER = `vdb${process.pid % 100000}`;
const WORK = mkdtempSync(join(tmpdir(), `bf-dhcpb-${process.pid}-`));
const started: ChildProcess[] = [];
const began = Date.now();

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const log = (msg: string) =>
  console.error(`[${((Date.now() - began) / 1000).toFixed(1).padStart(6)} s] ${msg}`);

// ---------------------------------------------------------------- setup and teardown

function cleanup(): void {
  for (const p of started) {
    if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
  }
  deleteNetns(CLIENT_NS, SERVER_NS);
  rmSync(WORK, { recursive: true, force: true });
}
process.on("exit", cleanup);
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    cleanup();
    process.exit(130);
  });
}

function makeLan(): void {
  makeBridgedLan({
    serverNs: SERVER_NS,
    clientNs: CLIENT_NS,
    outer: OUTER,
    serverCidr: "10.99.0.1/24",
  });
}

/** bootfleet as committed at ref, built into snap (see bench/lib/snapshot.ts). */
function buildSnapshot(ref: string, snap: string): string {
  const commit = buildRefSnapshot(REPO, ref, snap, log);
  if (PATCH_SEND_INTERVAL !== "") {
    const file = join(snap, "dist/netboot/dhcp/transport.js");
    const before = readFileSync(file, "utf8");
    const after = before.replace(
      "opts.sendIntervalMs ?? 1",
      `opts.sendIntervalMs ?? ${Number(PATCH_SEND_INTERVAL)}`,
    );
    if (after === before)
      throw new Error("--patch-send-interval: default not found in transport.js");
    writeFileSync(file, after);
    log(`EXPERIMENT: transport sendIntervalMs default patched to ${PATCH_SEND_INTERVAL} ms`);
    return `${commit}+sendInterval=${PATCH_SEND_INTERVAL}`;
  }
  return commit;
}

// ---------------------------------------------------------------- the load generator

interface Pass {
  sent: number;
  answered: number;
  lost: number;
  wrong: number;
  lateOrDuplicate: number;
  sendErrors: number;
  seconds: number;
  offersPerSec: number;
  p50ms: number | null;
  p99ms: number | null;
  maxms: number | null;
  serverCpuSeconds?: number;
}
interface Step extends Pass {
  rate: number;
  sendRate: number;
  maxBacklog: number;
}

function loadgen<T>(cfg: Record<string, unknown>, limitMs = 90_000): Promise<T> {
  return new Promise((res, rej) => {
    const child = spawn(
      "ip",
      ["netns", "exec", CLIENT_NS, "python3", LOADGEN, "eth0", JSON.stringify(cfg)],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    started.push(child);
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), limitMs);
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (code !== 0) return rej(new Error(`loadgen ${cfg.mode} exited with ${code}`));
      res(JSON.parse(out) as T);
    });
  });
}

async function measured(pid: number, cfg: Record<string, unknown>): Promise<Pass> {
  const before = processCpuSeconds(pid);
  const r = await loadgen<Pass>(cfg);
  r.serverCpuSeconds = processCpuSeconds(pid) - before;
  return r;
}

// ---------------------------------------------------------------- the servers

interface Running extends NsProcess {
  dataDir?: string;
}

const stop = (r: Running) => stopProcess(r.proc, 8000);

function spawnIn(cmd: string, args: string[], env: Record<string, string>, cwd: string): Running {
  const r = spawnInNetns(SERVER_NS, cmd, args, env, cwd);
  started.push(r.proc);
  return r;
}

function startBootfleet(snap: string, rep: number, profile: boolean): Running {
  const dataDir = join(WORK, `data-${rep}-${basename(snap)}`);
  mkdirSync(dataDir);
  const nodeArgs = profile ? ["--cpu-prof", `--cpu-prof-dir=${CPU_PROF}`] : [];
  if (profile && CPU_PROF_INTERVAL) nodeArgs.push(`--cpu-prof-interval=${CPU_PROF_INTERVAL}`);
  const r = spawnIn(
    process.execPath,
    [...nodeArgs, join(snap, "bin/bootfleetd.js")],
    {
      BOOTFLEET_DATA_DIR: dataDir,
      BOOTFLEET_HTTP_LISTEN: ":80",
      BOOTFLEET_DHCP_ENABLED: "true",
      BOOTFLEET_NETBOOT_INTERFACES: "br0",
      BOOTFLEET_TFTP_PORT: "69",
      BOOTFLEET_LOG_LEVEL: "warn",
    },
    snap,
  );
  return { ...r, dataDir };
}

function startDnsmasq(): Running {
  // The brief's command, plus three flags that keep dnsmasq off the host's files
  // (/etc/dnsmasq.conf, /var/run/dnsmasq.pid, /var/lib/misc/dnsmasq.leases).
  return spawnIn(
    "dnsmasq",
    [
      "--no-daemon",
      "--port=0",
      "--interface=br0",
      "--bind-interfaces",
      "--dhcp-range=10.99.0.0,proxy",
      "--pxe-service=x86PC,bootfleet,undionly",
      "--pxe-service=X86-64_EFI,bootfleet,snponly",
      "--log-facility=/dev/null",
      "--conf-file=/dev/null",
      `--pid-file=${join(WORK, "dnsmasq.pid")}`,
      `--dhcp-leasefile=${join(WORK, "dnsmasq.leases")}`,
    ],
    {},
    WORK,
  );
}

interface ProbeReply {
  answered: boolean;
  messageType?: number;
  chaddrMatches?: boolean;
  siaddr?: string;
  file?: string;
  options?: number[];
  vendorClass?: string;
}

/** Waits until the server answers a DISCOVER (bounded), and returns that reply. */
async function waitAnswering(r: Running, name: string): Promise<ProbeReply> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (r.proc.exitCode !== null) throw new Error(`${name} exited:\n${r.output()}`);
    const p = await loadgen<ProbeReply>({ mode: "probe", mac: PROBE_MAC, timeout: 1.0 });
    if (p.answered) return p;
    if (Date.now() > deadline) throw new Error(`${name} never answered:\n${r.output()}`);
    await sleep(300);
  }
}

// ---------------------------------------------------------------- bootfleet's database

const macOf = (i: number) =>
  [0x02, 0xbf, 0xd0, (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff]
    .map((b) => b.toString(16).padStart(2, "0"))
    .join(":");

interface StoreLike {
  machines: {
    getByMac(mac: string): unknown;
    recordSeen(d: {
      mac_address: string;
      client_arch: number | null;
      client_uuid: string | null;
      vendor_class: string | null;
    }): unknown;
  };
  db: { prepare(sql: string): { run(...params: unknown[]): { changes: number } } };
  close(): void;
}
interface StoreModule {
  Store: { open(o: { path: string; busyTimeoutMs: number }): StoreLike };
}

async function openStore(snap: string, dataDir: string): Promise<StoreLike> {
  const mod = (await import(join(snap, "dist/store/index.js"))) as StoreModule;
  return mod.Store.open({ path: join(dataDir, "bootfleet.db"), busyTimeoutMs: 5000 });
}

/** How many of the benchmark's MACs bootfleet has recorded. */
async function recorded(snap: string, dataDir: string): Promise<number> {
  const store = await openStore(snap, dataDir);
  try {
    let n = 0;
    for (let i = 0; i < MACS; i++) if (store.machines.getByMac(macOf(i))) n++;
    return n;
  } finally {
    store.close();
  }
}

/** Records the MACs the discovery limit turned away, the way discovery itself would have. */
async function registerRest(snap: string, dataDir: string): Promise<number> {
  const store = await openStore(snap, dataDir);
  try {
    let n = 0;
    for (let i = 0; i < MACS; i++) {
      const mac = macOf(i);
      if (store.machines.getByMac(mac)) continue;
      store.machines.recordSeen({
        mac_address: mac,
        client_arch: 0,
        client_uuid: null,
        vendor_class: "PXEClient:Arch:00000:UNDI:002001",
      });
      n++;
    }
    return n;
  } finally {
    store.close();
  }
}

/** Every machine last seen an hour ago, as after a night: the next request updates it. */
async function ageLastSeen(snap: string, dataDir: string): Promise<number> {
  const store = await openStore(snap, dataDir);
  try {
    const anHourAgo = new Date(Date.now() - 3_600_000).toISOString();
    return store.db.prepare("UPDATE machines SET last_seen = ?").run(anHourAgo).changes;
  } finally {
    store.close();
  }
}

// ---------------------------------------------------------------- one round of one server

interface Round {
  server: "bootfleet" | "dnsmasq";
  /** The commit a bootfleet round ran. */
  commit?: string;
  rep: number;
  probe: ProbeReply;
  passes: Record<string, Pass>;
  ramp: Step[];
  recordedAfterNew?: number;
  recordedAfterAgain?: number;
  registeredByBench?: number;
  agedByBench?: number;
}

async function round(
  server: Round["server"],
  rep: number,
  snap: string,
  commit?: string,
): Promise<Round> {
  const r =
    server === "bootfleet"
      ? startBootfleet(snap, rep, CPU_PROF !== "" && rep === 1)
      : startDnsmasq();
  try {
    const probe = await waitAnswering(r, server);
    const pid = r.proc.pid!;
    const macs = [0, MACS];
    const win = { mode: "window", macs, window: WINDOW, timeout: TIMEOUT_S };
    const out: Round = { server, commit, rep, probe, passes: {}, ramp: [] };
    out.passes.new = await measured(pid, win);
    if (r.dataDir) out.recordedAfterNew = await recorded(snap, r.dataDir);
    out.passes.again = await measured(pid, win);
    if (r.dataDir) {
      out.recordedAfterAgain = await recorded(snap, r.dataDir);
      out.registeredByBench = await registerRest(snap, r.dataDir);
      out.passes.known = await measured(pid, win);
      out.agedByBench = await ageLastSeen(snap, r.dataDir);
      out.passes.stale = await measured(pid, win);
    }
    const before = processCpuSeconds(pid);
    const ramp = await loadgen<{ steps: Step[] }>({
      mode: "ramp",
      macs,
      rates: RATES,
      seconds: STEP_SECONDS,
      timeout: TIMEOUT_S,
    });
    out.ramp = ramp.steps;
    const rampCpu = processCpuSeconds(pid) - before;
    const rampSeconds = ramp.steps.reduce((s, x) => s + x.seconds, 0);
    log(
      `${server}${commit ? ` ${commit.slice(0, 7)}` : ""} #${rep}: ` +
        Object.entries(out.passes)
          .map(
            ([k, p]) =>
              `${k} ${p.offersPerSec.toFixed(0)}/s p99 ${p.p99ms?.toFixed(1)} ms lost ${p.lost}`,
          )
          .join("; ") +
        `; ramp ${out.ramp.map((s) => `${s.rate}:${s.offersPerSec.toFixed(0)}/${s.lost}`).join(" ")}` +
        ` (ramp cpu ${((rampCpu / rampSeconds) * 100).toFixed(0)}%)` +
        (out.recordedAfterNew !== undefined
          ? `; recorded ${out.recordedAfterNew} then ${out.recordedAfterAgain}`
          : ""),
    );
    return out;
  } finally {
    await stop(r);
  }
}

// ---------------------------------------------------------------- report

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const fmt = (x: number) =>
  Number.isNaN(x) ? "–" : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
const spread = (xs: number[]) =>
  xs.every(Number.isNaN)
    ? "–"
    : xs.length > 1
      ? `${fmt(median(xs))} (${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))})`
      : fmt(xs[0]!);

function table(rounds: Round[]): string {
  const of = (s: Round["server"]) => rounds.filter((r) => r.server === s);
  const lines = [
    `| pass | server | offers/s | p50 ms | p99 ms | lost / sent | server CPU ms per offer |`,
    `| --- | --- | ---: | ---: | ---: | ---: | ---: |`,
  ];
  const ratios: string[] = [];
  for (const pass of ["new", "again", "known", "stale"]) {
    const med: Record<string, number> = {};
    for (const s of ["bootfleet", "dnsmasq"] as const) {
      const ps = of(s)
        .map((r) => r.passes[pass])
        .filter((p): p is Pass => p !== undefined);
      if (ps.length === 0) continue;
      med[s] = median(ps.map((p) => p.offersPerSec));
      lines.push(
        `| ${pass}, window ${WINDOW} | ${s} | ${spread(ps.map((p) => p.offersPerSec))} | ` +
          `${spread(ps.map((p) => p.p50ms ?? Number.NaN))} | ${spread(ps.map((p) => p.p99ms ?? Number.NaN))} | ` +
          `${ps.map((p) => p.lost).join(", ")} / ${ps[0]!.sent} | ` +
          `${spread(ps.map((p) => ((p.serverCpuSeconds ?? 0) * 1000) / Math.max(1, p.answered)))} |`,
      );
    }
    if (med.bootfleet !== undefined) {
      // dnsmasq keeps no state in proxy mode: every pass of it is the same work.
      const ref = med.dnsmasq ?? median(of("dnsmasq").map((r) => r.passes.again!.offersPerSec));
      ratios.push(`${pass}: ${(med.bootfleet / ref).toFixed(2)}`);
    }
  }
  lines.push("", `Offers/s ratio bootfleet / dnsmasq (medians): ${ratios.join("; ")}`, "");
  lines.push(
    `| open loop, offered /s | server | offers/s | p50 ms | p99 ms | lost / sent |`,
    `| ---: | --- | ---: | ---: | ---: | ---: |`,
  );
  for (const rate of RATES) {
    for (const s of ["bootfleet", "dnsmasq"] as const) {
      const st = of(s)
        .map((r) => r.ramp.find((x) => x.rate === rate))
        .filter((x): x is Step => x !== undefined);
      if (st.length === 0) continue;
      lines.push(
        `| ${rate} (sent at ${fmt(median(st.map((x) => x.sendRate)))}) | ${s} | ${spread(st.map((x) => x.offersPerSec))} | ` +
          `${spread(st.map((x) => x.p50ms ?? Number.NaN))} | ${spread(st.map((x) => x.p99ms ?? Number.NaN))} | ` +
          `${st.map((x) => x.lost).join(", ")} / ${st[0]!.sent} |`,
      );
    }
  }
  return lines.join("\n");
}

/** Each round's ratio of each build to that round's dnsmasq (known, stale: its again). */
function roundByRound(rounds: Round[], commits: string[]): string {
  const lines = [
    "Round by round, bootfleet / the same round's dnsmasq (known and stale: of its again):",
    "",
    `| round | ${commits.map((c) => `${c.slice(0, 7)} new / again / known / stale`).join(" | ")} |`,
    `| ---: | ${commits.map(() => "---").join(" | ")} |`,
  ];
  for (let rep = 1; rep <= REPS; rep++) {
    const dns = rounds.find((r) => r.server === "dnsmasq" && r.rep === rep);
    if (!dns) continue;
    const cells = commits.map((c) => {
      const bf = rounds.find((r) => r.commit === c && r.rep === rep);
      if (!bf) return "–";
      return ["new", "again", "known", "stale"]
        .map((p) => {
          const d = dns.passes[p] ?? dns.passes.again!;
          const b = bf.passes[p];
          return b ? (b.offersPerSec / d.offersPerSec).toFixed(2) : "–";
        })
        .join(" / ");
    });
    lines.push(`| ${rep} | ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("needs root: network namespaces, raw sockets");
  for (const tool of ["ip", "python3", "dnsmasq"]) {
    execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
  }
  if (CPU_PROF) mkdirSync(CPU_PROF, { recursive: true });
  const builds = REFS.map((ref, i) => {
    const snap = join(WORK, i === 0 ? "snap" : `snap-${i}`);
    return { snap, commit: buildSnapshot(ref, snap) };
  });
  const commit = builds.map((b) => b.commit).join(" and ");
  const snap = builds[0]!.snap;
  makeLan();
  log(`LAN up: ${SERVER_NS} (br0 10.99.0.1) <- veth -> ${CLIENT_NS} (eth0, no address)`);
  const rounds: Round[] = [];
  for (let rep = 1; rep <= REPS; rep++) {
    // A, dnsmasq, B; the next round B, dnsmasq, A (one ref: bootfleet, dnsmasq as before).
    const order = rep % 2 === 1 ? builds : [...builds].reverse();
    for (const [k, b] of order.entries()) {
      rounds.push(await round("bootfleet", rep, b.snap, b.commit));
      if (k === 0) rounds.push(await round("dnsmasq", rep, snap));
    }
  }
  const probes = ["bootfleet", "dnsmasq"].map((s) => {
    const p = rounds.find((r) => r.server === s)!.probe;
    return `${s}: message type ${p.messageType}, chaddr ok ${p.chaddrMatches}, siaddr ${p.siaddr}, file "${p.file}", option 60 "${p.vendorClass}", options [${p.options?.join(",")}]`;
  });
  const boot = rounds.filter((r) => r.server === "bootfleet");
  const report = [
    `bootfleet ${commit} vs ${execFileSync("dnsmasq", ["--version"], { encoding: "utf8" }).split("\n")[0]}`,
    `machine: ${cpus().length} × ${cpus()[0]?.model ?? "?"}, Linux ${execFileSync("uname", ["-r"], { encoding: "utf8" }).trim()}, Node ${process.version}, ${execFileSync("python3", ["--version"], { encoding: "utf8" }).trim()}`,
    `MACs ${MACS}, window ${WINDOW}, time-out ${TIMEOUT_S} s, ramp ${RATES.join("/")} per s for ${STEP_SECONDS} s each, ${REPS} rounds; whole run ${((Date.now() - began) / 1000).toFixed(0)} s`,
    "",
    "First replies:",
    ...probes.map((p) => `- ${p}`),
    "",
    `bootfleet recorded, of the ${MACS} MACs: after "new" ${boot.map((r) => r.recordedAfterNew).join(", ")}; after "again" ${boot.map((r) => r.recordedAfterAgain).join(", ")}; the bench then registered the other ${boot.map((r) => r.registeredByBench).join(", ")}, and before "stale" set the last_seen of ${boot.map((r) => r.agedByBench).join(", ")} an hour back`,
    "",
    ...builds.flatMap((b) => [
      ...(builds.length > 1 ? [`bootfleet ${b.commit}:`, ""] : []),
      table(rounds.filter((r) => r.server === "dnsmasq" || r.commit === b.commit)),
      "",
    ]),
    ...(builds.length > 1
      ? [
          roundByRound(
            rounds,
            builds.map((b) => b.commit),
          ),
        ]
      : []),
  ].join("\n");
  console.log(report);
  if (JSON_OUT) writeFileSync(JSON_OUT, JSON.stringify({ commit, rounds }, null, 2));
  if (CPU_PROF) {
    const files = readdirSync(CPU_PROF).filter((f) => f.endsWith(".cpuprofile"));
    for (const f of files)
      console.log(`\nCPU profile ${f} (self time):\n${topOfProfile(join(CPU_PROF, f))}`);
    if (files.length === 0) console.log("\n(no CPU profile was written)");
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
