// bootfleet's HTTP stack against a bare Hono handler answering the same bytes, on loopback:
//
//   list:            GET /api/machines?limit=100 (admin token) with 5,000 machines in the store
//   (boot-custom, in RESULTS.md, is gone: a machine's own script is served only to that
//   machine, as the kernel's neighbour table says, and once per URL; loopback is neither.)
//   boot-discovery:  GET /boot/<mac>/<token> of an unknown MAC (the discovery script, which
//                    carries a freshly issued token, so its bytes change every second)
//
//   node --import tsx bench/api/run.ts [--duration 10] [--warmup 2] [--reps 2]
//        [--connections 16] [--threads 2] [--machines 5000] [--no-build] [--json FILE]
//        [--profile DIR] [--only list|boot-discovery] [--compare REF]
//
// Needs wrk (apt-get install -y wrk). Builds the daemon (npm run build) unless --no-build.
// --connections is the number of keep-alive clients: 16 as issue #13's goal says (32 was the
// default before). --compare REF also runs bootfleet as committed at REF (built in a snapshot,
// bench/lib/snapshot.ts) on a copy of the same store, measured in the same reps (order
// checkout, bare, REF, then the reverse), so a change is measured against its base in one run.
// Both are served by the built daemon (node bin/bootfleetd.js), run with
// `[api] rate_limit_per_minute = 0` (BOOTFLEET_API_RATE_LIMIT_PER_MINUTE=0) so that its
// per-user limit does not answer 429 in the middle of the run.
// Every server listens on 127.0.0.1; each is stopped by its pid; the temp folder is removed.

import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { loadOrCreateSigningKey } from "../../src/api/auth/keys.js";
import { issueBootToken } from "../../src/netboot/script/token.js";
import { Store } from "../../src/store/index.js";
import type { BootAction, MachineStatus, NewMachine } from "../../src/store/machines.js";
import { adminAccessToken } from "../lib/admin-login.js";
import { benchArgs } from "../lib/args.js";
import { freePort } from "../lib/net.js";
import { processCpuSeconds } from "../lib/proc.js";
import { buildSnapshot } from "../lib/snapshot.js";
import type { CannedResponse } from "./serve.js";

const args = benchArgs();
const opt = args.str;
const DURATION = Number(opt("duration", "10"));
const WARMUP = Number(opt("warmup", "2"));
const REPS = Number(opt("reps", "2"));
const CONNECTIONS = Number(opt("connections", "16"));
const THREADS = Number(opt("threads", "2"));
const MACHINES = Number(opt("machines", "5000"));
const JSON_OUT = opt("json", "");
const BUILD = !args.has("no-build");
// A folder for V8 CPU profiles of the servers (.cpuprofile, open in Chrome DevTools).
const PROFILE = opt("profile", "");
const nodeFlags = PROFILE ? ["--cpu-prof", "--cpu-prof-dir", PROFILE] : [];
// One scenario only (a profile of it alone).
const ONLY = opt("only", "");
// Another commit's daemon, measured beside this checkout's.
const COMPARE = opt("compare", "");

const ROOT = new URL("../../", import.meta.url).pathname;
const HERE = new URL(".", import.meta.url).pathname;
const HOST = "127.0.0.1";
const CUSTOM_MAC = "02:bf:00:00:09:c4"; // machine 2500 of the fill
const UNKNOWN_MAC = "02:bf:ff:00:00:01";
const CUSTOM_SCRIPT = [
  "#!ipxe",
  "echo bootfleet bench: custom script",
  "kernel http://10.99.0.1/images/rescue/vmlinuz initrd=initrd.img console=ttyS0 boot=live quiet",
  "initrd http://10.99.0.1/images/rescue/initrd.img",
  "boot || shell",
  "",
].join("\n");

const children: ChildProcess[] = [];
let tmp: string | undefined;

function log(msg: string) {
  process.stderr.write(`[bench/api] ${msg}\n`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Busy and total jiffies of the whole host, to tell how loaded the 2 cores were. */
function hostJiffies(): { busy: number; total: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: total - idle, total };
}

async function stopChild(child: ChildProcess) {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 12_000);
  await exited;
  clearTimeout(timer);
}

async function cleanup() {
  await Promise.all(children.map(stopChild));
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  tmp = undefined;
}

/** Starts serve.ts in a mode and waits (bounded) for the port it prints. */
function startServe(mode: string, arg: string): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(
    process.execPath,
    [...nodeFlags, "--import", "tsx", join(HERE, "serve.ts"), mode, arg],
    {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`serve.ts ${mode}: no port in 30 s`)), 30_000);
    child.once("exit", (code) => reject(new Error(`serve.ts ${mode} exited with ${code}`)));
    child.stdout!.on("data", (d) => {
      out += d;
      const nl = out.indexOf("\n");
      if (nl < 0) return;
      clearTimeout(timer);
      resolve({ child, port: (JSON.parse(out.slice(0, nl)) as { port: number }).port });
    });
  });
}

async function waitHttp(url: string, child: ChildProcess, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${url}: the server exited (${child.exitCode})`);
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(2000) });
      if (r.ok) return;
    } catch {
      // not listening yet
    }
    await sleep(200);
  }
  throw new Error(`${url} did not answer within ${timeoutMs} ms`);
}

function fillStore(path: string) {
  const store = Store.open({ path, busyTimeoutMs: 5000 });
  const statuses: MachineStatus[] = ["active", "active", "active", "inactive", "maintenance"];
  const actions: BootAction[] = ["sanboot", "sanboot", "sanboot", "menu", "local"];
  store.transaction(() => {
    for (let i = 1; i <= MACHINES; i++) {
      const mac = `02:bf:00:00:${((i >> 8) & 0xff).toString(16).padStart(2, "0")}:${(i & 0xff).toString(16).padStart(2, "0")}`;
      const room = `room-${1 + (i % 12)}`;
      const m: NewMachine = {
        name: `pc-${String(i).padStart(4, "0")}`,
        description: `Lab workstation ${i}`,
        mac_address: mac,
        ip_address: `10.${20 + (i >> 16)}.${(i >> 8) & 0xff}.${i & 0xff}`,
        hostname: `pc-${String(i).padStart(4, "0")}.lab.example`,
        boot_mode: i % 3 === 0 ? "bios" : "uefi",
        status: statuses[i % statuses.length]!,
        location: `building-${1 + (i % 3)}`,
        room,
        asset_tag: `AT-${100000 + i}`,
        boot_action: actions[i % actions.length]!,
        overlay_policy: i % 2 ? "reset" : "persistent",
      };
      if (mac === CUSTOM_MAC) {
        m.status = "active";
        m.boot_action = "custom";
        m.custom_script = CUSTOM_SCRIPT;
      }
      store.machines.create(m);
    }
  });
  const n = store.machines.count();
  store.close();
  if (n !== MACHINES) throw new Error(`store holds ${n} machines, expected ${MACHINES}`);
}

interface WrkResult {
  requests: number;
  duration_us: number;
  bytes: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
  latency_us: { p50: number; p90: number; p99: number; max: number; mean: number };
}

// wrk's latency histogram is in microseconds; done() runs once with every thread merged.
const WRK_LUA = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
`;

function wrk(url: string, seconds: number, headers: string[]): Promise<WrkResult> {
  const argv = [
    `-t${THREADS}`,
    `-c${CONNECTIONS}`,
    `-d${seconds}s`,
    "--timeout",
    "5s",
    "-s",
    join(tmp!, "report.lua"),
    ...headers.flatMap((h) => ["-H", h]),
    url,
  ];
  return new Promise((resolve, reject) => {
    const child = spawn("wrk", argv, { stdio: ["ignore", "pipe", "pipe"] });
    children.push(child);
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    child.stderr.on("data", (d) => {
      err += d;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), (seconds + 30) * 1000);
    child.once("exit", (code) => {
      clearTimeout(timer);
      const line = out.split("\n").find((l) => l.startsWith("WRKJSON "));
      if (code !== 0 || !line) {
        reject(new Error(`wrk ${url} exited ${code}: ${err.trim() || out.trim()}`));
        return;
      }
      resolve(JSON.parse(line.slice(8)) as WrkResult);
    });
  });
}

type Server = "bootfleet" | "bare" | "ref";

interface Target {
  label: string;
  url: string;
  pid: number;
  /** wrk's extra headers (each daemon has its own admin token). */
  headers: string[];
}

interface Scenario {
  name: string;
  description: string;
  targets: Partial<Record<Server, Target>> & { bootfleet: Target; bare: Target };
}

interface Measurement {
  scenario: string;
  server: Server;
  rep: number;
  rps: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  max_ms: number;
  server_cpu_us_per_req: number;
  host_busy_pct: number;
  bytes_per_response: number;
}

async function measure(s: Scenario, which: Server, rep: number): Promise<Measurement> {
  const t = s.targets[which]!;
  await wrk(t.url, WARMUP, t.headers);
  const cpu0 = processCpuSeconds(t.pid);
  const host0 = hostJiffies();
  const r = await wrk(t.url, DURATION, t.headers);
  const cpu1 = processCpuSeconds(t.pid);
  const host1 = hostJiffies();
  const e = r.errors;
  const failed = e.connect + e.read + e.write + e.status + e.timeout;
  if (failed > 0 || r.requests === 0) {
    throw new Error(`${s.name} on ${which}: ${r.requests} requests, errors ${JSON.stringify(e)}`);
  }
  const seconds = r.duration_us / 1e6;
  const ms = (us: number) => Math.round(us / 10) / 100;
  return {
    scenario: s.name,
    server: which,
    rep,
    rps: Math.round(r.requests / seconds),
    p50_ms: ms(r.latency_us.p50),
    p90_ms: ms(r.latency_us.p90),
    p99_ms: ms(r.latency_us.p99),
    max_ms: ms(r.latency_us.max),
    server_cpu_us_per_req: Math.round(((cpu1 - cpu0) * 1e6) / r.requests),
    host_busy_pct: Math.round((100 * (host1.busy - host0.busy)) / (host1.total - host0.total)),
    bytes_per_response: Math.round(r.bytes / r.requests),
  };
}

async function getBytes(url: string, headers: Record<string, string> = {}) {
  const r = await fetch(url, { headers, signal: AbortSignal.timeout(10_000) });
  const body = Buffer.from(await r.arrayBuffer());
  return { status: r.status, body, type: r.headers.get("content-type") ?? "", headers: r.headers };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const LIST_PATH = "/api/machines?limit=100";

/** A daemon as the bench runs it: its own data folder (a copy of the filled store). */
interface Daemon {
  label: string;
  pid: number;
  base: string;
  dataDir: string;
  /** The admin's Authorization header value. */
  auth: string;
  list: Awaited<ReturnType<typeof getBytes>>;
  discoveryPath: string;
  discovery: Awaited<ReturnType<typeof getBytes>>;
}

/**
 * Starts `root`/bin/bootfleetd.js on `dataDir` (which holds the filled store), logs in as
 * admin and fetches the list and the discovery script from it, checking their shape.
 */
async function startDaemon(label: string, root: string, dataDir: string): Promise<Daemon> {
  const port = await freePort(HOST);
  const own = join(dataDir, "..");
  const daemon = spawn(
    process.execPath,
    [...nodeFlags, join(root, "bin/bootfleetd.js"), "--config", join(tmp!, "empty.toml")],
    {
      cwd: own,
      stdio: ["ignore", "ignore", "inherit"],
      env: {
        PATH: process.env.PATH,
        BOOTFLEET_DATA_DIR: dataDir,
        BOOTFLEET_HTTP_LISTEN: `${HOST}:${port}`,
        BOOTFLEET_DHCP_ENABLED: "false",
        BOOTFLEET_TFTP_PORT: "0",
        BOOTFLEET_LOG_LEVEL: "warn",
        BOOTFLEET_API_RATE_LIMIT_PER_MINUTE: "0",
        // Its own local socket: another bootfleetd on the host may hold the default one.
        BOOTFLEET_HTTP_SOCKET: join(own, "api.sock"),
        // Keep the iSCSI side inside the temp folder whatever it tries.
        BOOTFLEET_ISCSI_TARGET_DRIVER: "tgt",
        BOOTFLEET_ISCSI_TGT_CONF_DIR: join(own, "tgt-conf"),
        BOOTFLEET_ISCSI_LIO_SAVECONFIG: join(own, "saveconfig.json"),
      },
    },
  );
  children.push(daemon);
  const base = `http://${HOST}:${port}`;
  await waitHttp(`${base}/api/health`, daemon, 30_000);
  log(`${label} daemon (pid ${daemon.pid}) on ${base}`);
  const auth = `Bearer ${await adminAccessToken(base, dataDir)}`;

  // The list, as the daemon serves it (its fleet monitor gives each machine's live state).
  const list = await getBytes(`${base}${LIST_PATH}`, { authorization: auth });
  if (list.status !== 200) throw new Error(`list: ${label} daemon ${list.status}`);
  const items = JSON.parse(list.body.toString("utf8")) as unknown[];
  if (items.length !== 100 || list.headers.get("x-total-count") !== String(MACHINES)) {
    throw new Error(
      `list: ${items.length} items, X-Total-Count ${list.headers.get("x-total-count")}`,
    );
  }

  // Boot scripts: tokens bound to the MAC, valid for the whole run. A custom script is served
  // only to the machine itself (the neighbour table) and once per URL, so it cannot be
  // measured from loopback: the discovery script, served to anyone, is.
  const bootKey = loadOrCreateSigningKey(join(dataDir, "boot-token.key"));
  const expiresAt = Date.now() + 60 * 60_000;
  const discoveryPath = `/boot/${UNKNOWN_MAC.replaceAll(":", "")}/${issueBootToken(bootKey, { mac: UNKNOWN_MAC, expiresAt })}`;
  const discovery = await getBytes(`${base}${discoveryPath}`);
  const discoveryText = discovery.body.toString("utf8");
  if (
    discovery.status !== 200 ||
    !discoveryText.startsWith("#!ipxe") ||
    !discoveryText.includes(UNKNOWN_MAC.replaceAll(":", ""))
  ) {
    throw new Error(`discovery script: ${discovery.status} ${JSON.stringify(discoveryText)}`);
  }
  return { label, pid: daemon.pid!, base, dataDir, auth, list, discoveryPath, discovery };
}

async function main() {
  // wrk --version prints its banner and exits 1: only a missing binary is an error.
  const wrkVersion = spawnSync("wrk", ["--version"], { encoding: "utf8" });
  if (wrkVersion.error) throw new Error("wrk is missing: apt-get install -y wrk");
  const started = Date.now();
  if (BUILD) {
    log("npm run build");
    execFileSync("npm", ["run", "--silent", "build"], {
      cwd: ROOT,
      stdio: ["ignore", "ignore", "inherit"],
    });
  }
  tmp = mkdtempSync(join(tmpdir(), `bf-benchapi-${process.pid}-`));
  writeFileSync(join(tmp, "report.lua"), WRK_LUA);
  writeFileSync(join(tmp, "empty.toml"), "");
  const dataDir = join(tmp, "data");
  mkdirSync(dataDir, { recursive: true });
  log(`filling the store with ${MACHINES} machines`);
  fillStore(join(dataDir, "bootfleet.db"));
  let refCommit = "";
  let refDataDir = "";
  if (COMPARE) {
    // The same store for both daemons, copied before either opens it.
    refDataDir = join(tmp, "ref", "data");
    mkdirSync(refDataDir, { recursive: true });
    copyFileSync(join(dataDir, "bootfleet.db"), join(refDataDir, "bootfleet.db"));
    refCommit = buildSnapshot(ROOT, COMPARE, join(tmp, "snap"), log);
  }

  const daemon = await startDaemon("checkout", ROOT, dataDir);
  const ref = COMPARE
    ? await startDaemon(`ref ${refCommit}`, join(tmp, "snap"), refDataDir)
    : undefined;
  // Both daemons answer the list with the same bytes, or the comparison is not of one thing.
  if (ref && !ref.list.body.equals(daemon.list.body)) {
    throw new Error(`list: ${COMPARE} answers other bytes than the checkout`);
  }

  const canned: Record<string, CannedResponse> = {
    "/api/machines": { body: daemon.list.body.toString("base64"), type: daemon.list.type },
    [`/boot/${UNKNOWN_MAC.replaceAll(":", "")}`]: {
      body: daemon.discovery.body.toString("base64"),
      type: daemon.discovery.type,
    },
  };
  writeFileSync(join(tmp, "canned.json"), JSON.stringify(canned));
  const bare = await startServe("bare", join(tmp, "canned.json"));
  const bareBase = `http://${HOST}:${bare.port}`;
  log(`bare Hono server (pid ${bare.child.pid}) on ${bareBase}`);
  for (const [path, want] of [
    [LIST_PATH, daemon.list.body],
    [daemon.discoveryPath, daemon.discovery.body],
  ] as const) {
    const got = await getBytes(`${bareBase}${path}`);
    if (got.status !== 200 || !got.body.equals(want)) throw new Error(`bare ${path}: other bytes`);
  }

  const bareTarget = (path: string): Target => ({
    label: "bare",
    url: `${bareBase}${path}`,
    pid: bare.child.pid!,
    headers: [],
  });
  const scenarios: Scenario[] = [
    {
      name: "list",
      description: `GET ${LIST_PATH} (${MACHINES} machines, admin token; ${daemon.list.body.length} B JSON)`,
      targets: {
        bootfleet: {
          label: "daemon",
          url: `${daemon.base}${LIST_PATH}`,
          pid: daemon.pid,
          headers: [`Authorization: ${daemon.auth}`],
        },
        bare: bareTarget(LIST_PATH),
        ...(ref
          ? {
              ref: {
                label: `daemon at ${refCommit}`,
                url: `${ref.base}${LIST_PATH}`,
                pid: ref.pid,
                headers: [`Authorization: ${ref.auth}`],
              },
            }
          : {}),
      },
    },
    {
      name: "boot-discovery",
      description: `GET /boot/<mac>/<token>, unknown MAC: discovery script (${daemon.discovery.body.length} B)`,
      targets: {
        bootfleet: {
          label: "daemon",
          url: `${daemon.base}${daemon.discoveryPath}`,
          pid: daemon.pid,
          headers: [],
        },
        bare: bareTarget(daemon.discoveryPath),
        ...(ref
          ? {
              ref: {
                label: `daemon at ${refCommit}`,
                url: `${ref.base}${ref.discoveryPath}`,
                pid: ref.pid,
                headers: [],
              },
            }
          : {}),
      },
    },
  ];

  const results: Measurement[] = [];
  if (ONLY && !scenarios.some((s) => s.name === ONLY))
    throw new Error(`--only ${ONLY}: no such scenario`);
  const servers: Server[] = ref ? ["bootfleet", "bare", "ref"] : ["bootfleet", "bare"];
  for (const s of scenarios.filter((x) => !ONLY || x.name === ONLY)) {
    for (let rep = 1; rep <= REPS; rep++) {
      // ABBA order (ABC CBA), so a drift in the machine's other load falls on every side.
      const order = rep % 2 ? servers : [...servers].reverse();
      for (const which of order) {
        const m = await measure(s, which, rep);
        results.push(m);
        log(
          `${s.name} ${which} rep ${rep}: ${m.rps} req/s, p50 ${m.p50_ms} ms, p99 ${m.p99_ms} ms, ` +
            `${m.server_cpu_us_per_req} µs CPU/req, host ${m.host_busy_pct}% busy`,
        );
      }
    }
  }

  const load = readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
  const env = {
    cpu: `${cpus().length} × ${cpus()[0]?.model ?? "?"}`,
    node: process.version,
    wrk: wrkVersion.stdout.split("\n")[0]?.split(" [")[0] ?? "",
    commit: execFileSync("git", ["rev-parse", "--short", "HEAD"], {
      cwd: ROOT,
      encoding: "utf8",
    }).trim(),
    compare: refCommit,
    loadavg_after: load,
    duration_s: DURATION,
    warmup_s: WARMUP,
    reps: REPS,
    threads: THREADS,
    connections: CONNECTIONS,
    machines: MACHINES,
    wall_s: 0,
  };

  const lines: string[] = [];
  lines.push(
    `Machine: ${env.cpu}; Node ${env.node}; ${env.wrk}; commit ${env.commit}${refCommit ? ` (against ${refCommit})` : ""}; load average at the end ${env.loadavg_after}.`,
    `wrk -t${THREADS} -c${CONNECTIONS}, ${DURATION} s per measurement after ${WARMUP} s of warm-up, ${REPS} reps (ABBA order). Median of the reps (min–max); each rep below.`,
    "",
  );
  const measured = scenarios.filter((x) => !ONLY || x.name === ONLY);
  for (const s of measured)
    lines.push(`- **${s.name}**: ${s.description}; bootfleet = ${s.targets.bootfleet.label}`);
  lines.push(
    "",
    "| scenario | server | req/s median (min–max) | p50 ms | p99 ms | server CPU µs/req | ÷ bare req/s, median (per rep) | CPU/req ÷ bare |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  );
  const of = (sc: string, server: Server) =>
    results.filter((r) => r.scenario === sc && r.server === server);
  const med = (sc: string, server: Server, k: keyof Measurement) =>
    median(of(sc, server).map((r) => r[k] as number));
  for (const s of measured) {
    for (const server of servers) {
      const rs = of(s.name, server);
      const rps = rs.map((r) => r.rps);
      const cpu = med(s.name, server, "server_cpu_us_per_req");
      const bareRps = new Map(of(s.name, "bare").map((r) => [r.rep, r.rps]));
      const perRep = rs.map((r) => r.rps / bareRps.get(r.rep)!);
      const vsBare =
        server === "bare"
          ? ""
          : `${median(perRep).toFixed(2)} (${perRep.map((x) => x.toFixed(2)).join(", ")})`;
      const cpuVsBare =
        server === "bare"
          ? ""
          : `${(cpu / med(s.name, "bare", "server_cpu_us_per_req")).toFixed(2)}×`;
      const label = server === "bare" ? "bare Hono" : `bootfleet (${s.targets[server]!.label})`;
      lines.push(
        `| ${s.name} | ${label} | ${Math.round(median(rps))} (${Math.min(...rps)}–${Math.max(...rps)}) | ${med(s.name, server, "p50_ms").toFixed(2)} | ${med(s.name, server, "p99_ms").toFixed(2)} | ${Math.round(cpu)} | ${vsBare} | ${cpuVsBare} |`,
      );
    }
  }
  lines.push(
    "",
    "Each measurement:",
    "",
    "| scenario | server | rep | req/s | p50 ms | p90 ms | p99 ms | max ms | server CPU µs/req | host busy % | bytes/response (with headers) |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...results.map(
      (r) =>
        `| ${r.scenario} | ${r.server} | ${r.rep} | ${r.rps} | ${r.p50_ms} | ${r.p90_ms} | ${r.p99_ms} | ${r.max_ms} | ${r.server_cpu_us_per_req} | ${r.host_busy_pct} | ${r.bytes_per_response} |`,
    ),
    "",
    "The daemon ran with `[api] rate_limit_per_minute = 0` (the limiter is skipped; at the default of 100/min per user the list would answer 429 after 100 requests).",
  );
  env.wall_s = Math.round((Date.now() - started) / 1000);
  lines.push(`Whole run: ${env.wall_s} s.`);
  process.stdout.write(`${lines.join("\n")}\n`);
  if (JSON_OUT) writeFileSync(JSON_OUT, `${JSON.stringify({ env, results }, null, 2)}\n`);
}

for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    void cleanup().then(() => process.exit(130));
  });
}

try {
  await main();
} catch (err) {
  process.exitCode = 1;
  log(`failed: ${err instanceof Error ? err.message : String(err)}`);
} finally {
  await cleanup();
}
