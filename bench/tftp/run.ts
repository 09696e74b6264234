// Side-by-side TFTP benchmark on loopback: bootfleet vs tftpd-hpa (in.tftpd) vs dnsmasq, all fed
// by the same load generator (loadgen.ts) fetching Debian's snponly.efi with blksize 1468, with
// and without windowsize 8, by 1 client and by 50 concurrent clients.
//
//   node --import tsx bench/tftp/run.ts [--reps 3] [--file /usr/lib/ipxe/snponly.efi]
//     [--servers bootfleet,tftpd-hpa,dnsmasq,bootfleet-noshare] [--scenarios 1x1,1x8,50x1,50x8]
//
// --scenarios picks cells as CLIENTSxWINDOWSIZE (e.g. --scenarios 50x1 for lock-step at 50 clients
// only); like --servers, a subset skips the generator check and the table.
// --compare DIR adds "bootfleet (DIR)": the serve-bootfleet.ts of another checkout (e.g. one made
// with `git archive main src bench | tar -x -C DIR`, node_modules linked), measured interleaved
// with the rest, so a change is judged against its own before under the same load.
// --node-flags "A B" passes V8/Node flags (space-separated) to this checkout's bootfleet server
// only, so a flag is judged against --compare's server without it, or to attach a profiler;
// --node-env "K=V K2=V2" likewise sets environment variables for that server only.
//
// Needs root and, on Debian, tftpd-hpa (apt-get install -y tftpd-hpa), dnsmasq-base, iproute2.
// dnsmasq's TFTP has no option for its listening port (always 69), so every server and every
// generator runs on the loopback of a network namespace made for the run (same loopback code path
// for all, and nothing of the host's port 69 is touched). Each server is stopped by its pid, the
// namespace is deleted at the end.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { benchArgs } from "../lib/args.js";

const args = benchArgs();
const opt = args.str;
const REPS = Number(opt("reps", "3"));
/** Comma-separated subset: bootfleet,tftpd-hpa,dnsmasq,bootfleet-noshare. */
const ONLY = opt("servers", "bootfleet,tftpd-hpa,dnsmasq,bootfleet-noshare").split(",");
const SOURCE = opt("file", "/usr/lib/ipxe/snponly.efi");
const FILE = basename(SOURCE);
const HERE = new URL(".", import.meta.url).pathname;
const COMPARE = opt("compare", "");
const NODE_FLAGS = opt("node-flags", "")
  .split(" ")
  .filter((f) => f !== "");
const NODE_ENV = opt("node-env", "")
  .split(" ")
  .filter((f) => f !== "");
const NS = `bf-tftpbench-${process.pid}`;
const inNs = (argv: string[]) => ["netns", "exec", NS, ...argv];

interface GenResult {
  bytes: number;
  transfers: number;
  failures: number;
  resends: number;
  errors: string[];
  seconds: number;
  mbPerSec: number;
  generatorCpu: number;
}

interface Scenario {
  clients: number;
  rounds: number;
  windowsize: number;
}

const ALL_SCENARIOS: Scenario[] = [
  { clients: 1, rounds: 20, windowsize: 1 },
  { clients: 1, rounds: 20, windowsize: 8 },
  { clients: 50, rounds: 4, windowsize: 1 },
  { clients: 50, rounds: 4, windowsize: 8 },
];
const scenarioName = (sc: Scenario) => `${sc.clients}x${sc.windowsize}`;
const WANTED = opt("scenarios", ALL_SCENARIOS.map(scenarioName).join(",")).split(",");
for (const w of WANTED) {
  if (!ALL_SCENARIOS.some((sc) => scenarioName(sc) === w))
    throw new Error(
      `--scenarios: unknown "${w}" (known: ${ALL_SCENARIOS.map(scenarioName).join(",")})`,
    );
}
const SCENARIOS = ALL_SCENARIOS.filter((sc) => WANTED.includes(scenarioName(sc)));

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** CPU seconds of a process and its reaped children (in.tftpd forks one per transfer). */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // Fields 14-17 of stat(5) (utime stime cutime cstime); f starts at field 3.
    const ticks = [11, 12, 13, 14].reduce((s, i) => s + Number(f[i]), 0);
    return ticks / 100;
  } catch {
    return Number.NaN;
  }
}

function runGenerator(cfg: Record<string, unknown>): Promise<GenResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      "ip",
      inNs([process.execPath, "--import", "tsx", join(HERE, "loadgen.ts"), JSON.stringify(cfg)]),
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 300_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`load generator exited with ${code}`));
      resolve(JSON.parse(out) as GenResult);
    });
  });
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const gone = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]);
  if (!gone) {
    child.kill("SIGKILL");
    await exited;
  }
}

/**
 * The tftpd-hpa package starts its own daemon on port 69 where an init system lets it. Stop only
 * that one: the pid in its pid file, and only if that process really is in.tftpd.
 */
function stopDebianTftpd(): void {
  const pidFile = "/run/tftpd-hpa.pid";
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, "utf8").trim());
  if (!Number.isInteger(pid) || pid <= 1) return;
  let cmd = "";
  try {
    cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return;
  }
  if (!cmd.startsWith("/usr/sbin/in.tftpd")) return;
  process.kill(pid, "SIGTERM");
  console.error(`stopped the Debian tftpd-hpa service (pid ${pid})`);
}

interface Server {
  name: string;
  port: number;
  start(dir: string): Promise<ChildProcess>;
}

function readyLine(child: ChildProcess, line: string, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error(`no "${line}" within ${ms} ms`)), ms);
    child.stdout?.on("data", (d) => {
      buf += d;
      if (buf.includes(line)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once("exit", (code) => reject(new Error(`exited with ${code} before ready`)));
  });
}

const bootfleet = (shareFiles: boolean, checkout?: string): Server => ({
  name: checkout
    ? `bootfleet (${checkout})`
    : shareFiles
      ? "bootfleet"
      : "bootfleet (no file sharing)",
  port: checkout ? 6972 : shareFiles ? 6969 : 6971,
  async start(dir) {
    const child = spawn(
      "ip",
      inNs([
        // env(1) in the namespace: `ip netns exec` passes the environment on, but only this
        // server is to get these variables.
        ...(checkout || NODE_ENV.length === 0 ? [] : ["env", ...NODE_ENV]),
        process.execPath,
        ...(checkout ? [] : NODE_FLAGS),
        "--import",
        "tsx",
        checkout
          ? join(checkout, "bench/tftp/serve-bootfleet.ts")
          : join(HERE, "serve-bootfleet.ts"),
        JSON.stringify({
          root: join(dir, "root"),
          port: checkout ? 6972 : shareFiles ? 6969 : 6971,
          shareFiles,
          logFile: join(
            dir,
            checkout
              ? "bootfleet-compare.log"
              : shareFiles
                ? "bootfleet.log"
                : "bootfleet-noshare.log",
          ),
        }),
      ]),
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    await readyLine(child, "ready", 20_000);
    return child;
  },
});

const tftpdHpa: Server = {
  name: "tftpd-hpa",
  port: 6970,
  async start(dir) {
    // -L: stay in the foreground (one listener, a forked child per transfer); -s: chroot to DIR.
    // "-a 127.0.0.1:PORT" fails in a namespace with only a loopback (getaddrinfo's AI_ADDRCONFIG
    // ignores loopback addresses), so it binds the wildcard, which there is the loopback anyway.
    return spawn(
      "ip",
      inNs(["/usr/sbin/in.tftpd", "-L", "-4", "-s", join(dir, "root"), "-a", ":6970"]),
      {
        stdio: "ignore",
      },
    );
  },
};

const dnsmasq: Server = {
  name: "dnsmasq",
  port: 69,
  async start(dir) {
    return spawn(
      "ip",
      inNs([
        "/usr/sbin/dnsmasq",
        "--no-daemon",
        "-C",
        "/dev/null",
        "--port=0", // no DNS
        "--enable-tftp",
        `--tftp-root=${join(dir, "root")}`,
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--tftp-max=128", // see serve-bootfleet.ts: clients start their next fetch at once
        `--pid-file=${join(dir, "dnsmasq.pid")}`,
        `--log-facility=${join(dir, "dnsmasq.log")}`,
      ]),
      { stdio: "ignore" },
    );
  },
};

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

interface Row {
  server: string;
  scenario: Scenario;
  mbPerSec: number;
  runs: number[];
  generatorCpu: number;
  serverCpu: number;
  /** Server CPU milliseconds per MB served: steadier than MB/s on a shared, noisy machine. */
  cpuMsPerMb: number;
  resends: number;
  failures: number;
}

async function warmUp(server: Server, child: ChildProcess): Promise<void> {
  const base = { port: server.port, file: FILE, expected: SOURCE, blksize: 1468 };
  // Readiness: one fetch must succeed within ~10 s.
  let warm: GenResult | undefined;
  for (let i = 0; i < 20 && warm?.transfers !== 1; i++) {
    if (child.exitCode !== null) throw new Error(`${server.name} exited with ${child.exitCode}`);
    warm = await runGenerator({ ...base, clients: 1, rounds: 1, windowsize: 1, timeoutMs: 300 });
    if (warm.transfers !== 1) await sleep(500);
  }
  if (warm?.transfers !== 1)
    throw new Error(`${server.name} never served ${FILE}: ${warm?.errors}`);
}

/**
 * All servers run side by side (each on its own port) and the runs are interleaved (rep, then
 * scenario, then server), so load from elsewhere on the machine spreads over all of them alike.
 */
async function measureAll(servers: Server[], dir: string): Promise<Row[]> {
  const children: ChildProcess[] = [];
  try {
    for (const server of servers) {
      const child = await server.start(dir);
      children.push(child);
      await warmUp(server, child);
    }
    const results = new Map<string, Array<{ gen: GenResult; cpu: number }>>();
    const key = (s: Server, sc: Scenario) => `${s.name}|${sc.clients}|${sc.windowsize}`;
    for (let r = 0; r < REPS; r++) {
      for (const sc of SCENARIOS) {
        for (const server of servers)
          results.set(key(server, sc), results.get(key(server, sc)) ?? []);
        for (let i = 0; i < servers.length; i++) {
          const server = servers[i]!;
          const pid = children[i]!.pid!;
          const c0 = cpuSeconds(pid);
          const gen = await runGenerator({
            port: server.port,
            file: FILE,
            expected: SOURCE,
            blksize: 1468,
            ...sc,
          });
          results.get(key(server, sc))!.push({ gen, cpu: cpuSeconds(pid) - c0 });
        }
      }
    }
    const rows: Row[] = [];
    for (const server of servers) {
      for (const sc of SCENARIOS) {
        const runs = results.get(key(server, sc))!;
        const seconds = runs.reduce((a, x) => a + x.gen.seconds, 0);
        const mb = runs.reduce((a, x) => a + x.gen.bytes, 0) / 1e6;
        const cpu = runs.reduce((a, x) => a + x.cpu, 0);
        const row: Row = {
          server: server.name,
          scenario: sc,
          mbPerSec: median(runs.map((x) => x.gen.mbPerSec)),
          runs: runs.map((x) => x.gen.mbPerSec),
          generatorCpu: median(runs.map((x) => x.gen.generatorCpu)),
          serverCpu: cpu / seconds,
          cpuMsPerMb: (cpu * 1000) / mb,
          resends: runs.reduce((a, x) => a + x.gen.resends, 0),
          failures: runs.reduce((a, x) => a + x.gen.failures, 0),
        };
        rows.push(row);
        console.error(
          `${server.name.padEnd(28)} clients=${sc.clients} ws=${sc.windowsize}: ${row.mbPerSec.toFixed(1)} MB/s ` +
            `(runs ${row.runs.map((x) => x.toFixed(1)).join(", ")}; server CPU ${(row.serverCpu * 100).toFixed(0)}%, ` +
            `${row.cpuMsPerMb.toFixed(1)} CPU ms/MB; generator CPU ${(row.generatorCpu * 100).toFixed(0)}%, ` +
            `resends ${row.resends}, failures ${row.failures})`,
        );
        for (const x of runs)
          if (x.gen.errors.length > 0) console.error(`  errors: ${x.gen.errors.join("; ")}`);
      }
    }
    return rows;
  } finally {
    for (const child of children) await stop(child);
  }
}

/** Is the generator the bottleneck? Split the 50 clients over two generator processes. */
async function splitCheck(
  server: Server,
  dir: string,
  windowsize: number,
): Promise<{ one: number; two: number }> {
  const port = server.port;
  const child = await server.start(dir);
  try {
    await warmUp(server, child);
    const base = { port, file: FILE, expected: SOURCE, blksize: 1468, windowsize, rounds: 4 };
    const one = await runGenerator({ ...base, clients: 50 });
    const pair = await Promise.all([
      runGenerator({ ...base, clients: 25 }),
      runGenerator({ ...base, clients: 25 }),
    ]);
    const two =
      pair.reduce((s, x) => s + x.bytes, 0) / 1e6 / Math.max(...pair.map((x) => x.seconds));
    return { one: one.mbPerSec, two };
  } finally {
    await stop(child);
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0)
    throw new Error("run as root: the servers run in a network namespace");
  for (const bin of ["/usr/sbin/in.tftpd", "/usr/sbin/dnsmasq"]) {
    if (!existsSync(bin))
      throw new Error(`${bin} missing (apt-get install -y tftpd-hpa dnsmasq-base)`);
  }
  stopDebianTftpd();
  const dir = mkdtempSync(join(tmpdir(), `bf-tftp-bench-${process.pid}-`));
  execFileSync("ip", ["netns", "add", NS]);
  try {
    execFileSync("ip", inNs(["ip", "link", "set", "lo", "up"]));
    // tftpd-hpa and dnsmasq drop privileges: the tree must be readable by anyone.
    chmodSync(dir, 0o755);
    execFileSync("mkdir", ["-p", join(dir, "root")]);
    chmodSync(join(dir, "root"), 0o755);
    copyFileSync(SOURCE, join(dir, "root", FILE));
    chmodSync(join(dir, "root", FILE), 0o644);
    const size = readFileSync(SOURCE).length;
    console.error(
      `file ${SOURCE} (${size} bytes), blksize 1468, ${REPS} runs per cell (median shown)`,
    );

    const rows: Row[] = [];
    const all: Array<[string, Server]> = [
      ["bootfleet", bootfleet(true)],
      ["tftpd-hpa", tftpdHpa],
      ["dnsmasq", dnsmasq],
      ["bootfleet-noshare", bootfleet(false)],
    ];
    const measured = all.filter(([k]) => ONLY.includes(k)).map(([, s]) => s);
    // --compare-first runs DIR's server before this checkout's in every rep, for pairs in both
    // orders (the first of two back-to-back runs can see a different machine than the second).
    if (COMPARE) measured.splice(args.has("compare-first") ? 0 : 1, 0, bootfleet(true, COMPARE));
    rows.push(...(await measureAll(measured, dir)));
    if (COMPARE || ONLY.length < all.length || SCENARIOS.length < ALL_SCENARIOS.length) return;

    // Generator check against the fastest server at 50 clients.
    const fastest50 = rows
      .filter((r) => r.scenario.clients === 50)
      .sort((a, b) => b.mbPerSec - a.mbPerSec)[0]!;
    const servers = [bootfleet(true), tftpdHpa, dnsmasq];
    const fastServer = servers.find((s) => s.name === fastest50.server)!;
    const split = await splitCheck(fastServer, dir, fastest50.scenario.windowsize);
    console.error(
      `generator check on ${fastServer.name} (50 clients, ws=${fastest50.scenario.windowsize}): ` +
        `one generator ${split.one.toFixed(1)} MB/s, two generators ${split.two.toFixed(1)} MB/s`,
    );

    // Markdown table on stdout.
    const cell = (server: string, sc: Scenario) =>
      rows.find(
        (r) =>
          r.server === server &&
          r.scenario.clients === sc.clients &&
          r.scenario.windowsize === sc.windowsize,
      );
    const lines = [
      `| scenario | ${["bootfleet", "tftpd-hpa", "dnsmasq", "bootfleet (no file sharing)"].join(" | ")} | bootfleet / tftpd-hpa | bootfleet / dnsmasq |`,
      "|---|---|---|---|---|---|---|",
    ];
    for (const sc of SCENARIOS) {
      const b = cell("bootfleet", sc)!;
      const h = cell("tftpd-hpa", sc)!;
      const d = cell("dnsmasq", sc)!;
      const n = cell("bootfleet (no file sharing)", sc)!;
      const fmt = (r: Row) =>
        `${r.mbPerSec.toFixed(1)} MB/s (CPU ${(r.serverCpu * 100).toFixed(0)}%, ${r.cpuMsPerMb.toFixed(1)} ms/MB)`;
      lines.push(
        `| ${sc.clients} client${sc.clients > 1 ? "s" : ""}, windowsize ${sc.windowsize} | ${fmt(b)} | ${fmt(h)} | ${fmt(d)} | ${fmt(n)} | ${(b.mbPerSec / h.mbPerSec).toFixed(2)} | ${(b.mbPerSec / d.mbPerSec).toFixed(2)} |`,
      );
    }
    lines.push(
      "",
      `Generator check (${fastServer.name}, 50 clients, windowsize ${fastest50.scenario.windowsize}): one generator process ${split.one.toFixed(1)} MB/s, two processes ${split.two.toFixed(1)} MB/s.`,
    );
    process.stdout.write(`${lines.join("\n")}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    execFileSync("ip", ["netns", "del", NS]);
  }
}

await main();
