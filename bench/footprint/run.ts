// The daemon's footprint against a bare Hono server started the same way:
//
//   start:  time from spawn to the first 200 of GET /api/health (bootfleetd answers 503
//           until every service is up), and the CPU time the process used until then
//   idle:   VmRSS (with its anonymous and file-backed parts) after --idle seconds of nothing
//   list:   VmRSS again after one list request (bootfleetd: log in, then GET /api/machines)
//
//   node --import tsx bench/footprint/run.ts [--runs 5] [--idle 10] [--no-build]
//        [--daemon-flags "--max-semi-space-size=2"] [--json FILE]
//
// bootfleetd is the built daemon (`npm run build`, done here unless --no-build) run as
// `node [daemon-flags] bin/bootfleetd.js` on its embedded defaults (an empty --config) with a
// temp data_dir, twice per run: "first start" (empty folder: database created, keys and the
// admin's one-time password made) and "restart" (the same folder again, the usual case).
// The bare server is `node bench/footprint/bare-hono.mjs`. The three alternate in every
// run, in rotating order, so that load on the shared host falls on each alike.
// Every server listens on 127.0.0.1 and is stopped by its pid; the temp folder is removed.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { adminAccessToken } from "../lib/admin-login.js";
import { benchArgs } from "../lib/args.js";
import { freePort } from "../lib/net.js";
import { processCpuSeconds } from "../lib/proc.js";

const args = benchArgs();
const opt = args.str;
const RUNS = Number(opt("runs", "5"));
const IDLE_S = Number(opt("idle", "10"));
const JSON_OUT = opt("json", "");
const BUILD = !args.has("no-build");
const DAEMON_FLAGS = opt("daemon-flags", "").split(/\s+/).filter(Boolean);

const ROOT = new URL("../../", import.meta.url).pathname;
const HERE = new URL(".", import.meta.url).pathname;
const HOST = "127.0.0.1";
// The start of a loaded 2-core VM can take many seconds: this bounds a hung one.
const START_TIMEOUT_MS = 120_000;

type Kind = "first start" | "restart" | "bare Hono";
const KINDS: Kind[] = ["first start", "restart", "bare Hono"];

interface Sample {
  kind: Kind;
  run: number;
  start_ms: number;
  start_cpu_ms: number;
  idle_rss_mb: number;
  idle_anon_mb: number;
  idle_file_mb: number;
  list_rss_mb: number;
  load1: number;
}

const children = new Set<ChildProcess>();
let tmp: string | undefined;

function log(msg: string) {
  process.stderr.write(`[bench/footprint] ${msg}\n`);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** CPU milliseconds (user + system, all threads) of one process. */
const cpuMs = (pid: number) => processCpuSeconds(pid) * 1000;

/** VmRSS, RssAnon and RssFile of one process, in MB. */
function rss(pid: number): { total: number; anon: number; file: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (key: string) => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status);
    if (!m) throw new Error(`no ${key} in /proc/${pid}/status`);
    return Number(m[1]) / 1024;
  };
  return { total: kb("VmRSS"), anon: kb("RssAnon"), file: kb("RssFile") };
}

async function stop(child: ChildProcess) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  await exited;
  clearTimeout(timer);
  children.delete(child);
}

/** Polls (every 10 ms) until the URL answers 200; returns the ms since `t0`. */
async function firstOk(url: string, child: ChildProcess, t0: number, output: () => string) {
  while (performance.now() - t0 < START_TIMEOUT_MS) {
    if (child.exitCode !== null) {
      throw new Error(`${url}: the server exited (${child.exitCode}):\n${output()}`);
    }
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(2000) });
      await r.arrayBuffer();
      if (r.status === 200) return performance.now() - t0;
    } catch {
      // not listening yet
    }
    await sleep(10);
  }
  throw new Error(`${url}: no 200 within ${START_TIMEOUT_MS} ms:\n${output()}`);
}

async function measure(kind: Kind, run: number, dataDir: string): Promise<Sample> {
  const port = await freePort(HOST);
  const base = `http://${HOST}:${port}`;
  const argv =
    kind === "bare Hono"
      ? [join(HERE, "bare-hono.mjs")]
      : [...DAEMON_FLAGS, join(ROOT, "bin/bootfleetd.js"), "--config", join(tmp!, "empty.toml")];
  const env: Record<string, string> =
    kind === "bare Hono"
      ? { PATH: process.env.PATH ?? "/usr/bin:/bin", BARE_PORT: String(port) }
      : {
          PATH: process.env.PATH ?? "/usr/bin:/bin",
          BOOTFLEET_DATA_DIR: dataDir,
          BOOTFLEET_HTTP_LISTEN: `${HOST}:${port}`,
          BOOTFLEET_HTTP_SOCKET: join(dataDir, "api.sock"),
          BOOTFLEET_DHCP_ENABLED: "false",
          BOOTFLEET_TFTP_PORT: "0",
          // Keep the iSCSI side inside the temp folder and away from any tgtd of the host
          // (no tgtd listens on this control port: iSCSI is reported unavailable, as on a
          // laptop; everything else starts).
          BOOTFLEET_ISCSI_TARGET_DRIVER: "tgt",
          BOOTFLEET_ISCSI_TGT_CONTROL_PORT: "4242",
          BOOTFLEET_ISCSI_TGT_CONF_DIR: join(dataDir, "tgt-conf"),
        };
  const load1 = loadavg()[0]!;
  const t0 = performance.now();
  const child = spawn(process.execPath, argv, { cwd: tmp, env, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let text = "";
  child.stdout!.on("data", (d: Buffer) => {
    text += d.toString();
  });
  child.stderr!.on("data", (d: Buffer) => {
    text += d.toString();
  });
  const startMs = await firstOk(`${base}/api/health`, child, t0, () => text);
  const startCpu = cpuMs(child.pid!);
  await sleep(IDLE_S * 1000);
  const idle = rss(child.pid!);

  const headers: Record<string, string> = {};
  if (kind !== "bare Hono") {
    headers.authorization = `Bearer ${await adminAccessToken(base, dataDir)}`;
  }
  const list = await fetch(`${base}/api/machines?limit=100`, { headers });
  const body = (await list.json()) as unknown;
  if (!list.ok || !Array.isArray(body)) {
    throw new Error(`${kind}: list answered ${list.status} ${JSON.stringify(body)}`);
  }
  // Whatever the request left to finish (a log line, a history record) settles first.
  await sleep(1000);
  const afterList = rss(child.pid!);
  await stop(child);

  const r1 = (n: number) => Math.round(n * 10) / 10;
  return {
    kind,
    run,
    start_ms: Math.round(startMs),
    start_cpu_ms: startCpu,
    idle_rss_mb: r1(idle.total),
    idle_anon_mb: r1(idle.anon),
    idle_file_mb: r1(idle.file),
    list_rss_mb: r1(afterList.total),
    load1: r1(load1),
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

async function main() {
  if (BUILD) {
    log("npm run build");
    execFileSync("npm", ["run", "--silent", "build"], { cwd: ROOT, stdio: "inherit" });
  }
  tmp = mkdtempSync(join(tmpdir(), "bf-footprint-"));
  writeFileSync(join(tmp, "empty.toml"), "");
  const samples: Sample[] = [];
  for (let run = 1; run <= RUNS; run++) {
    const dataDir = join(tmp, `data-${run}`);
    mkdirSync(dataDir);
    // Rotating order: first start must precede restart (same folder); bare moves around them.
    const order: Kind[] =
      run % 3 === 1
        ? ["bare Hono", "first start", "restart"]
        : run % 3 === 2
          ? ["first start", "bare Hono", "restart"]
          : ["first start", "restart", "bare Hono"];
    for (const kind of order) {
      const s = await measure(kind, run, dataDir);
      samples.push(s);
      log(
        `run ${run} ${kind}: start ${s.start_ms} ms (cpu ${s.start_cpu_ms} ms), idle RSS ${s.idle_rss_mb} MB (anon ${s.idle_anon_mb}, file ${s.idle_file_mb}), after list ${s.list_rss_mb} MB, load ${s.load1}`,
      );
    }
  }

  const cols = [
    "start_ms",
    "start_cpu_ms",
    "idle_rss_mb",
    "idle_anon_mb",
    "idle_file_mb",
    "list_rss_mb",
  ] as const;
  const med = (kind: Kind, col: (typeof cols)[number]) =>
    median(samples.filter((s) => s.kind === kind).map((s) => s[col]));
  const range = (kind: Kind, col: (typeof cols)[number]) => {
    const xs = samples.filter((s) => s.kind === kind).map((s) => s[col]);
    return `${Math.min(...xs)}–${Math.max(...xs)}`;
  };
  const lines = [
    `node ${process.version}, ${RUNS} runs, idle ${IDLE_S} s, daemon flags: ${DAEMON_FLAGS.join(" ") || "(none)"}, load average during the runs ${Math.min(...samples.map((s) => s.load1))}–${Math.max(...samples.map((s) => s.load1))}`,
    "",
    `| server | start to 200 ms | start CPU ms | idle RSS MB | anon MB | file MB | after list MB |`,
    "|---|---|---|---|---|---|---|",
    ...KINDS.map(
      (k) => `| ${k} | ${cols.map((c) => `${med(k, c)} (${range(k, c)})`).join(" | ")} |`,
    ),
    "",
    "bootfleetd ÷ bare Hono (medians):",
    "",
    "| | start to 200 | start CPU | idle RSS | after list |",
    "|---|---|---|---|---|",
    ...(["first start", "restart"] as const).map((k) => {
      const ratio = (c: (typeof cols)[number]) => (med(k, c) / med("bare Hono", c)).toFixed(2);
      return `| ${k} | ${ratio("start_ms")} | ${ratio("start_cpu_ms")} | ${ratio("idle_rss_mb")} | ${ratio("list_rss_mb")} |`;
    }),
  ];
  process.stdout.write(`${lines.join("\n")}\n`);
  if (JSON_OUT) writeFileSync(JSON_OUT, `${JSON.stringify({ samples }, null, 2)}\n`);
}

async function cleanup() {
  await Promise.all([...children].map(stop));
  if (tmp) rmSync(tmp, { recursive: true, force: true });
}

process.once("SIGINT", () => {
  void cleanup().then(() => process.exit(130));
});

try {
  await main();
} finally {
  await cleanup();
}
