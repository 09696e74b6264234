// Boot storm benchmark: N simulated BIOS PCs boot at once, each through the whole sequence
// (bench/storm/client.ts: DISCOVER/OFFER, 4011 REQUEST/ACK, TFTP of undionly.kpxe, iPXE's
// DHCP, the HTTP script, iSCSI login with CHAP, a replay of the recorded boot set's reads),
// against bootfleet and against the hand-built stack (dnsmasq proxy-DHCP + tftpd-hpa + nginx
// with one static script per MAC + tgt targets made with tgtadm), on the same overlays.
//
//   node --import tsx bench/storm/run.ts [--clients 100] [--bootset-mib 8] [--spread-ms 0]
//        [--limit-seconds 900] [--ref HEAD] [--sides bootfleet,handbuilt] [--json FILE]
//        [--cpu-prof DIR]   (a V8 CPU profile of bootfleetd during its side; top functions printed)
//        [--keep-snap | --snap DIR]   (keep the built bootfleet for the next run / use a kept one)
//        [--daemon-log FILE]   (bootfleetd's log lines after its side, its last 200 KB)
//        [--tftp-max-transfers N]   (bootfleetd's tftp.max_transfers; its default is 200)
//        [--uv-threads N]   (bootfleetd's UV_THREADPOOL_SIZE; unset: libuv's 4)
//
// Needs root, iproute2, tgt, dnsmasq-base, tftpd-hpa, nginx-light, python3, xfsprogs, fincore.
// Layout: server namespace with br0 (10.98.0.1/16); client namespace with eth0 (veth to br0)
// and one macvlan per PC on it, each with the PC's MAC and address (10.98.1.x...). The PCs'
// packets leave through eth0, but the server's kernel learns each PC's MAC by ARP (the
// macvlan owning the address answers, arp_ignore=1), so bootfleet's peer binding (the
// neighbour table's MAC for the peer must be the machine's) holds as on a real LAN.
// The disk: a loop-mounted XFS with a 2 GiB golden image holding random bytes wherever the
// boot set reads, and one reflink overlay per PC (bootfleet makes them; the hand-built stack
// serves the same files). --bootset-mib clips the recorded set (67.6 MiB) to its first reads.
// Caches are dropped before each side. Everything is removed at the end, also on ctrl-C.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  closeSync,
  copyFileSync,
  ftruncateSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { mountLoopFs } from "../../test/iscsi/overlay/loopfs.js";
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
import type { ClientResult, Phase, StormClientConfig } from "./client.js";

const args = benchArgs();
const opt = args.str;
const N = Number(opt("clients", "100"));
const BOOTSET_MIB = Number(opt("bootset-mib", "8"));
const SPREAD_MS = Number(opt("spread-ms", "0"));
const LIMIT_S = Number(opt("limit-seconds", "900"));
const REF = opt("ref", "HEAD");
const SIDES = opt("sides", "bootfleet,handbuilt").split(",");
const JSON_OUT = opt("json", "");
const SNAP = opt("snap", "");
const CPU_PROF = args.has("cpu-prof") ? resolve(opt("cpu-prof", "bench-storm-prof")) : "";
const KEEP_SNAP = args.has("keep-snap");
const DAEMON_LOG = opt("daemon-log", "");
// bootfleetd's tftp.max_transfers (its default, 200, when not given): above it, an RRQ is left
// unanswered until the PC resends it (before branch tftp3 it was answered "Server busy", which a
// PXE ROM takes as the end of its network boot).
const TFTP_MAX = args.has("tftp-max-transfers") ? args.positiveInt("tftp-max-transfers", 200) : 0;
// The servers get only PATH and what is passed here (bench/lib/netns.ts), so the pool size
// of the shell that runs the bench never reaches bootfleetd.
const UV_THREADS = args.has("uv-threads") ? args.positiveInt("uv-threads", 4) : 0;
if (!(N >= 1 && N <= 500)) throw new Error("--clients: 1 to 500 (the bench is bounded)");
if (!(BOOTSET_MIB > 0 && BOOTSET_MIB <= 68)) throw new Error("--bootset-mib: above 0, at most 68");

const HERE = new URL(".", import.meta.url).pathname;
const REPO = resolve(HERE, "../..");
const BOOTSET = join(HERE, "boot-set/debian-12-bios.csv");
const SERVER_NS = `bf-storm-${process.pid}`;
const CLIENT_NS = `bf-storm-${process.pid}-c`;
const OUTER = `vst${process.pid % 100000}`;
const SERVER = "10.98.0.1";
const WORK = mkdtempSync(join(tmpdir(), `bf-storm-${process.pid}-`));
// bootfleet's tgt driver owns only targets under its own prefix.
const IQN_PREFIX = "iqn.2024-01.io.bootfleet";
const TGT_CONTROL = 20_000 + (process.pid % 10_000);
const GOLDEN_BYTES = 2 * 1024 ** 3;
const started: ChildProcess[] = [];
const cleanups: (() => Promise<void> | void)[] = [];
const began = Date.now();

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const run = (cmd: string, args: string[], input?: string) =>
  execFileSync(cmd, args, { encoding: "utf8", input, stdio: ["pipe", "pipe", "pipe"] });
const inNs = (ns: string, cmd: string, ...a: string[]) =>
  run("ip", ["netns", "exec", ns, cmd, ...a]);
const log = (msg: string) =>
  console.error(`[${((Date.now() - began) / 1000).toFixed(1).padStart(7)} s] ${msg}`);

const macOf = (k: number) =>
  `02:bf:5e:${[(k >> 16) & 0xff, (k >> 8) & 0xff, k & 0xff].map((x) => x.toString(16).padStart(2, "0")).join(":")}`;
const ipOf = (k: number) => `10.98.${1 + Math.floor(k / 200)}.${10 + (k % 200)}`;

// ---------------------------------------------------------------- setup and teardown

let cleaning: Promise<void> | undefined;
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const p of started) {
      if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
    }
    await sleep(300);
    deleteNetns(CLIENT_NS, SERVER_NS);
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
    rmSync(WORK, { recursive: true, force: true });
  })();
  return cleaning;
}
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    void cleanup().then(() => process.exit(130));
  });
}

function makeLan(): void {
  // nginx's workers (www-data) read the hand-built stack's files below WORK.
  execFileSync("chmod", ["711", WORK]);
  makeBridgedLan({
    serverNs: SERVER_NS,
    clientNs: CLIENT_NS,
    outer: OUTER,
    serverCidr: `${SERVER}/16`,
  });
  const c = (...a: string[]) => inNs(CLIENT_NS, a[0]!, ...a.slice(1));
  // Replies reach each PC's macvlan while its packets leave through eth0: no reverse-path
  // check; only the interface holding an address answers ARP for it (the PC's own MAC);
  // ARP requests from eth0 carry eth0's own address, never a PC's.
  for (const k of ["all", "default"]) {
    c("sysctl", "-qw", `net.ipv4.conf.${k}.rp_filter=0`);
    c("sysctl", "-qw", `net.ipv4.conf.${k}.arp_ignore=1`);
    c("sysctl", "-qw", `net.ipv4.conf.${k}.arp_announce=2`);
  }
  c("ip", "addr", "add", "10.98.250.1/32", "dev", "eth0");
  c("ip", "route", "add", "10.98.0.0/16", "dev", "eth0", "src", "10.98.250.1");
  const batch: string[] = [];
  for (let k = 0; k < N; k++) {
    batch.push(`link add mv${k} link eth0 address ${macOf(k)} type macvlan mode bridge`);
    batch.push(`addr add ${ipOf(k)}/32 dev mv${k}`);
    batch.push(`link set mv${k} up`);
  }
  run("ip", ["-n", CLIENT_NS, "-batch", "-"], `${batch.join("\n")}\n`);
}

/** bootfleet as committed at REF, built into WORK/snap (see bench/lib/snapshot.ts). */
function buildSnapshot(): { snap: string; commit: string } {
  if (SNAP !== "") {
    // A snapshot built by an earlier run (--keep-snap): repeated runs skip the build.
    return { snap: SNAP, commit: readFileSync(join(SNAP, "COMMIT"), "utf8").trim() };
  }
  const snap = KEEP_SNAP ? mkdtempSync(join(tmpdir(), "bf-storm-snap-")) : join(WORK, "snap");
  const commit = buildRefSnapshot(REPO, REF, snap, log);
  writeFileSync(join(snap, "COMMIT"), `${commit}\n`);
  if (KEEP_SNAP) log(`snapshot kept in ${snap} (reuse it with --snap ${snap}, remove it after)`);
  return { snap, commit };
}

// ---------------------------------------------------------------- the boot set and the disk

interface BootSet {
  reads: [number, number][];
  bytes: number;
  ofAll: number;
  allBytes: number;
}

/** The recorded reads in order, up to --bootset-mib, as 512-byte block ranges. */
function loadBootSet(): BootSet {
  const rows = readFileSync(BOOTSET, "utf8").trim().split("\n").slice(1);
  const all = rows.map((r) => r.split(",").map(Number) as [number, number]);
  const reads: [number, number][] = [];
  let bytes = 0;
  for (const [off, len] of all) {
    if (bytes >= BOOTSET_MIB * 1024 * 1024) break;
    const lba = Math.floor(off / 512);
    const blocks = Math.ceil((off + len) / 512) - lba;
    reads.push([lba, blocks]);
    bytes += blocks * 512;
  }
  return {
    reads,
    bytes,
    ofAll: all.length,
    allBytes: all.reduce((s, [, l]) => s + l, 0),
  };
}

/** A sparse golden image with random bytes wherever the boot set reads (so reads hit disk). */
function writeGolden(path: string, set: BootSet): void {
  const fd = openSync(path, "w");
  ftruncateSync(fd, GOLDEN_BYTES);
  const done = new Set<number>();
  for (const [lba, blocks] of set.reads) {
    // 64 KiB chunks, each written once
    for (let c = Math.floor(lba / 128); c <= Math.floor((lba + blocks - 1) / 128); c++) {
      if (done.has(c)) continue;
      done.add(c);
      writeSync(fd, randomBytes(65536), 0, 65536, c * 65536);
    }
  }
  closeSync(fd);
}

// ---------------------------------------------------------------- measuring the server

/** CPU seconds (user + system, children reaped included) of every process in the namespace. */
function serverCpuSeconds(): number {
  const nsIno = statSync(`/run/netns/${SERVER_NS}`).ino;
  let total = 0;
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      const link = readlinkSync(`/proc/${pid}/ns/net`);
      if (link !== `net:[${nsIno}]`) continue;
      total += processCpuSeconds(pid, true);
    } catch {
      // gone meanwhile
    }
  }
  return total;
}

/** Bytes read from the block device under the loop-mounted XFS (diskstats field 6). */
function deviceBytesRead(device: string): number {
  const name = device.replace(/^\/dev\//, "");
  const line = readFileSync("/proc/diskstats", "utf8")
    .split("\n")
    .find((l) => l.trim().split(/\s+/)[2] === name);
  if (!line) throw new Error(`no ${name} in /proc/diskstats`);
  return Number(line.trim().split(/\s+/)[5]) * 512;
}

/** Page cache held by the overlays and the golden image (fincore), bytes. */
function pageCacheBytes(files: string[]): number {
  let total = 0;
  for (let i = 0; i < files.length; i += 100) {
    const out = run("fincore", [
      "--bytes",
      "--noheadings",
      "--raw",
      "-o",
      "RES",
      ...files.slice(i, i + 100),
    ]);
    for (const l of out.trim().split("\n")) total += Number(l) || 0;
  }
  return total;
}

/**
 * Datagrams the server namespace's raw and UDP sockets dropped (receive buffer full), summed
 * over the sockets open now (/proc/net/{raw,udp}, last column): bootfleet's DHCP listens on a
 * raw socket, dnsmasq and tftpd-hpa on UDP sockets.
 */
function socketDrops(): { raw: number; udp: number } {
  const sum = (file: string) =>
    inNs(SERVER_NS, "cat", file)
      .trim()
      .split("\n")
      .slice(1)
      .reduce((a, l) => a + (Number(l.trim().split(/\s+/).at(-1)) || 0), 0);
  return { raw: sum("/proc/net/raw"), udp: sum("/proc/net/udp") };
}

function dropCaches(): void {
  execFileSync("sync");
  writeFileSync("/proc/sys/vm/drop_caches", "3");
}

// ---------------------------------------------------------------- processes in the server namespace

type Proc = NsProcess;

function spawnServer(
  cmd: string,
  args: string[],
  env: Record<string, string> = {},
  cwd = WORK,
): Proc {
  const p = spawnInNetns(SERVER_NS, cmd, args, env, cwd);
  started.push(p.proc);
  return p;
}

const stop = (p: Proc, signal: NodeJS.Signals = "SIGTERM") => stopProcess(p.proc, 15_000, signal);

const tgtadm = (...a: string[]) => inNs(SERVER_NS, "tgtadm", "-C", String(TGT_CONTROL), ...a);

async function startTgtd(): Promise<Proc> {
  const p = spawnServer("tgtd", [
    "-f",
    "-C",
    String(TGT_CONTROL),
    "--iscsi",
    `portal=${SERVER}:3260`,
  ]);
  for (let i = 0; ; i++) {
    try {
      tgtadm("--op", "show", "--mode", "sys");
      return p;
    } catch (err) {
      if (i > 100) throw err;
      await sleep(100);
    }
  }
}

async function stopTgtd(p: Proc): Promise<void> {
  try {
    tgtadm("--op", "delete", "--mode", "system");
  } catch {
    // already gone
  }
  await stop(p, "SIGKILL");
}

// ---------------------------------------------------------------- the two stacks

interface Machine {
  k: number;
  mac: string;
  ip: string;
  iqn: string;
  initiator: string;
  user: string;
  password: string;
  targetId: number;
}

interface StoreLike {
  images: {
    create(i: Record<string, unknown>): { id: number };
    addVersion(id: number, v: Record<string, unknown>): unknown;
  };
  machines: { create(m: Record<string, unknown>): { id: number } };
  targets: { create(t: Record<string, unknown>): { id: number } };
  close(): void;
}

async function seedStore(snap: string, data: string, golden: string): Promise<Machine[]> {
  const mod = (await import(join(snap, "dist/store/index.js"))) as {
    Store: { open(o: { path: string; busyTimeoutMs: number }): StoreLike };
  };
  const store = mod.Store.open({ path: join(data, "bootfleet.db"), busyTimeoutMs: 5000 });
  try {
    const image = store.images.create({
      name: "Golden",
      filename: "golden.raw",
      status: "ready",
      format: "raw",
    });
    store.images.addVersion(image.id, { path: golden, size_bytes: GOLDEN_BYTES, note: "v1" });
    const out: Machine[] = [];
    for (let k = 0; k < N; k++) {
      const mac = macOf(k);
      const name = `storm-pc-${k}`;
      const m = store.machines.create({
        name,
        mac_address: mac,
        status: "active",
        boot_action: "sanboot",
        overlay_policy: "persistent",
      });
      const iqn = `${IQN_PREFIX}:${name}`;
      const initiator = `${IQN_PREFIX}:client-${mac.replace(/:/g, "")}`;
      const user = `user-${k}`;
      const password = randomBytes(12).toString("hex");
      const t = store.targets.create({
        name: `${name}-target`,
        iqn,
        portal_ip: SERVER,
        machine_id: m.id,
        system_image_id: image.id,
        initiator_iqn: initiator,
        chap_username: user,
        chap_password: password,
      });
      out.push({ k, mac, ip: ipOf(k), iqn, initiator, user, password, targetId: t.id });
    }
    return out;
  } finally {
    store.close();
  }
}

async function startBootfleet(snap: string, data: string): Promise<Proc> {
  const profile = CPU_PROF ? ["--cpu-prof", `--cpu-prof-dir=${CPU_PROF}`] : [];
  const p = spawnServer(
    process.execPath,
    [...profile, join(snap, "bin/bootfleetd.js")],
    {
      BOOTFLEET_DATA_DIR: data,
      BOOTFLEET_HTTP_LISTEN: ":80",
      BOOTFLEET_HTTP_SOCKET: join(WORK, "api.sock"),
      BOOTFLEET_TFTP_PORT: "69",
      BOOTFLEET_DHCP_ENABLED: "true",
      BOOTFLEET_NETBOOT_INTERFACES: "br0",
      BOOTFLEET_ISCSI_TARGET_DRIVER: "tgt",
      BOOTFLEET_ISCSI_OVERLAY_DRIVER: "reflink",
      BOOTFLEET_ISCSI_TGT_CONTROL_PORT: String(TGT_CONTROL),
      BOOTFLEET_ISCSI_TGT_CONF_DIR: join(WORK, "tgt-conf"),
      BOOTFLEET_LOG_LEVEL: "info",
      ...(TFTP_MAX ? { BOOTFLEET_TFTP_MAX_TRANSFERS: String(TFTP_MAX) } : {}),
      ...(UV_THREADS ? { UV_THREADPOOL_SIZE: String(UV_THREADS) } : {}),
    },
    snap,
  );
  mkdirSync(join(WORK, "tgt-conf"), { recursive: true });
  const ready = new Promise<void>((res, rej) => {
    createInterface({ input: p.proc.stdout! }).on("line", (l) => {
      if (l.includes('"bootfleetd ready"')) res();
    });
    p.proc.once("exit", (code) =>
      rej(new Error(`bootfleetd exited (${code}):\n${p.output().slice(-3000)}`)),
    );
  });
  const bound = sleep(LIMIT_S * 1000).then(() => {
    throw new Error("bootfleetd not ready in time");
  });
  await Promise.race([ready, bound]);
  return p;
}

/**
 * At 9 am the daemon has run all night: on tgt each target has its spare account
 * (src/iscsi/target/tgt-spares.ts), made once tgtd was quiet for a while after the start,
 * and each machine that was off has its next boot's secret made ready
 * (`Reconciler.freshenIdle`, a pass a minute). Waits for both (bounded: a build from before
 * them never says so).
 */
async function overnightDone(daemon: Proc, machines: number): Promise<void> {
  const started = Date.now();
  const waitFor = async (what: (l: string) => boolean, ms: number) => {
    const seen = () => daemon.output().split("\n").some(what);
    while (!seen() && Date.now() - started < ms) await sleep(200);
    return seen();
  };
  const spares = await waitFor(
    (l) => l.includes('"tgt spare accounts made"') && l.includes('"left":0'),
    30_000,
  );
  log(
    spares
      ? `bootfleetd: spare accounts made, ${((Date.now() - started) / 1000).toFixed(1)} s after ready`
      : "bootfleetd: no spare accounts said made in 30 s (a build without them?)",
  );
  if (!spares) return;
  const ready = await waitFor(
    (l) =>
      l.includes('"next boot\'s CHAP secret made ready on machines that are off"') &&
      l.includes(`"machines":${machines}`),
    120_000,
  );
  log(
    ready
      ? `bootfleetd: every machine's next secret made ready, ${((Date.now() - started) / 1000).toFixed(1)} s after ready`
      : "bootfleetd: next secrets not said made ready for every machine in 120 s",
  );
}

/** The hand-built stack's tgt targets: what an admin's loop of tgtadm calls makes. */
function handBuiltTargets(machines: Machine[], overlay: (m: Machine) => string): Promise<void> {
  const lines: string[] = [];
  const t = `tgtadm -C ${TGT_CONTROL}`;
  for (const [i, m] of machines.entries()) {
    const tid = i + 1;
    lines.push(
      `${t} --lld iscsi --op new --mode target --tid ${tid} -T ${m.iqn}`,
      `${t} --lld iscsi --op new --mode logicalunit --tid ${tid} --lun 1 -b ${overlay(m)}`,
      `${t} --lld iscsi --op bind --mode target --tid ${tid} -I ALL`,
      `${t} --lld iscsi --op new --mode account --user ${m.user} --password ${m.password}`,
      `${t} --lld iscsi --op bind --mode account --tid ${tid} --user ${m.user}`,
    );
  }
  const script = join(WORK, "tgt-setup.sh");
  // The secrets stay in a root-only file here; tgtadm itself takes them as arguments.
  writeFileSync(script, `set -e\n${lines.join("\n")}\n`, { mode: 0o600 });
  // Not execFileSync: tgtd logs to the pipe this process reads, and a blocked event loop
  // would let that pipe fill, tgtd block on it, and tgtadm wait for tgtd forever.
  return new Promise((res, rej) => {
    const child = spawn("ip", ["netns", "exec", SERVER_NS, "bash", script], { stdio: "inherit" });
    started.push(child);
    child.on("exit", (code) => (code === 0 ? res() : rej(new Error(`tgtadm loop exited ${code}`))));
  });
}

function startHandBuilt(machines: Machine[]): Proc[] {
  const tftp = join(WORK, "tftp");
  const www = join(WORK, "www");
  mkdirSync(tftp, { recursive: true });
  mkdirSync(join(www, "boot"), { recursive: true });
  copyFileSync("/usr/lib/ipxe/undionly.kpxe", join(tftp, "undionly.0"));
  writeFileSync(
    join(www, "boot.ipxe"),
    `#!ipxe\nchain http://${SERVER}/boot/\${net0/mac:hexhyp}.ipxe\n`,
  );
  for (const m of machines) {
    writeFileSync(
      join(www, "boot", `${m.mac.replace(/:/g, "-")}.ipxe`),
      [
        "#!ipxe",
        `set initiator-iqn ${m.initiator}`,
        `set username ${m.user}`,
        `set password ${m.password}`,
        `sanboot --drive 0x80 iscsi:${SERVER}::3260:1:${m.iqn}`,
        "",
      ].join("\n"),
      { mode: 0o644 },
    );
  }
  const nginxConf = join(WORK, "nginx.conf");
  writeFileSync(
    nginxConf,
    `daemon off;
worker_processes auto;
pid ${WORK}/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${WORK}/nginx-body;
  proxy_temp_path ${WORK}/nginx-proxy;
  fastcgi_temp_path ${WORK}/nginx-fastcgi;
  uwsgi_temp_path ${WORK}/nginx-uwsgi;
  scgi_temp_path ${WORK}/nginx-scgi;
  default_type text/plain;
  server { listen ${SERVER}:80; root ${www}; }
}
`,
  );
  return [
    spawnServer("dnsmasq", [
      "--no-daemon",
      "--port=0",
      "--interface=br0",
      "--bind-interfaces",
      "--dhcp-range=10.98.0.0,proxy",
      "--dhcp-userclass=set:ipxe,iPXE",
      "--pxe-service=tag:!ipxe,x86PC,PXE,undionly",
      `--pxe-service=tag:ipxe,x86PC,iPXE,http://${SERVER}/boot.ipxe`,
      "--log-facility=/dev/null",
      "--conf-file=/dev/null",
      `--pid-file=${join(WORK, "dnsmasq.pid")}`,
      `--dhcp-leasefile=${join(WORK, "dnsmasq.leases")}`,
    ]),
    spawnServer("in.tftpd", [
      "--foreground",
      "--listen",
      "--address",
      `${SERVER}:69`,
      "--secure",
      tftp,
    ]),
    spawnServer("nginx", ["-c", nginxConf, "-p", WORK]),
  ];
}

// ---------------------------------------------------------------- one side

interface Side {
  side: string;
  results: ClientResult[];
  wallMs: number;
  cpuSeconds: number;
  diskBytesRead: number;
  pageCacheBytes: number;
  drops: { raw: number; udp: number };
}

async function storm(side: string, set: BootSet, device: string, files: string[]): Promise<Side> {
  const cfg: StormClientConfig = {
    server: SERVER,
    ifname: "eth0",
    clients: Array.from({ length: N }, (_, k) => ({ mac: macOf(k), ip: ipOf(k) })),
    reads: set.reads,
    spreadMs: SPREAD_MS,
    limitSeconds: LIMIT_S,
  };
  const cfgFile = join(WORK, `client-${side}.json`);
  writeFileSync(cfgFile, JSON.stringify(cfg));
  // The neighbour entries of the previous side go: each side's server learns them by ARP.
  try {
    inNs(SERVER_NS, "ip", "neigh", "flush", "dev", "br0");
  } catch {
    // none
  }
  dropCaches();
  const cpu0 = serverCpuSeconds();
  const disk0 = deviceBytesRead(device);
  const drops0 = socketDrops();
  log(`${side}: storm of ${N} PCs`);
  const out = await new Promise<string>((res, rej) => {
    const child = spawn(
      "ip",
      [
        "netns",
        "exec",
        CLIENT_NS,
        process.execPath,
        "--import",
        "tsx",
        join(HERE, "client.ts"),
        cfgFile,
      ],
      { cwd: REPO, stdio: ["ignore", "pipe", "inherit"] },
    );
    started.push(child);
    let text = "";
    child.stdout.on("data", (d) => {
      text += d;
    });
    child.on("exit", (code) => (code === 0 ? res(text) : rej(new Error(`client exited ${code}`))));
  });
  const cpuSeconds = serverCpuSeconds() - cpu0;
  const diskBytesRead = deviceBytesRead(device) - disk0;
  const cache = pageCacheBytes(files);
  const drops1 = socketDrops();
  const drops = { raw: drops1.raw - drops0.raw, udp: drops1.udp - drops0.udp };
  const parsed = JSON.parse(out) as { results: ClientResult[]; wallMs: number };
  const okCount = parsed.results.filter((r) => r.ok).length;
  log(`${side}: ${okCount}/${N} booted, ${(parsed.wallMs / 1000).toFixed(1)} s`);
  for (const r of parsed.results.filter((x) => !x.ok).slice(0, 5)) log(`  ${r.mac}: ${r.error}`);
  return { side, ...parsed, cpuSeconds, diskBytesRead, pageCacheBytes: cache, drops };
}

// ---------------------------------------------------------------- report

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}
const fmt = (x: number) =>
  Number.isNaN(x) ? "–" : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
const MiB = (b: number) => (b / 1024 / 1024).toFixed(1);
const PHASE_LIST: Phase[] = ["dhcp", "pxe4011", "tftp", "ipxeDhcp", "http", "login", "replay"];

function report(sides: Side[], set: BootSet, commit: string): string {
  const lines: string[] = [];
  lines.push(
    `bootfleet ${commit}${TFTP_MAX ? ` (tftp.max_transfers ${TFTP_MAX})` : ""}; ${N} PCs, spread ${SPREAD_MS} ms; boot set clipped to ${set.reads.length} of ${set.ofAll} reads, ${MiB(set.bytes)} MiB of ${MiB(set.allBytes)} per PC`,
    `machine: ${cpus().length} × ${cpus()[0]?.model ?? "?"}, load before ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}, Node ${process.version}; whole run ${((Date.now() - began) / 1000).toFixed(0)} s`,
    "",
    `| phase (ms) | ${sides.map((s) => `${s.side} p50 | ${s.side} p99`).join(" | ")} |`,
    `| --- | ${sides.map(() => "---: | ---:").join(" | ")} |`,
  );
  for (const ph of PHASE_LIST) {
    const cells = sides.map((s) => {
      const xs = s.results.filter((r) => r.ok).map((r) => r.ms[ph] ?? Number.NaN);
      return `${fmt(pct(xs, 50))} | ${fmt(pct(xs, 99))}`;
    });
    lines.push(`| ${ph} | ${cells.join(" | ")} |`);
  }
  lines.push(
    "",
    `| | ${sides.map((s) => s.side).join(" | ")} |`,
    `| --- | ${sides.map(() => "---:").join(" | ")} |`,
  );
  const row = (name: string, f: (s: Side) => string) =>
    lines.push(`| ${name} | ${sides.map(f).join(" | ")} |`);
  const booted = (s: Side) => s.results.filter((r) => r.ok);
  const allBooted = (s: Side) => Math.max(...booted(s).map((r) => r.doneAtMs ?? 0)) / 1000;
  const moved = (s: Side) =>
    s.results.reduce((a, r) => a + r.tftpBytes + r.httpBytes + r.iscsiBytes, 0);
  row("booted", (s) => `${booted(s).length} / ${N}`);
  row("time until all booted (s)", (s) => fmt(allBooted(s)));
  row("bytes moved (MiB: TFTP + HTTP + iSCSI data)", (s) => MiB(moved(s)));
  row("wire time of those bytes at 1 Gbit/s (s)", (s) => fmt((moved(s) * 8) / 1e9));
  row("time until all booted / wire time", (s) => fmt(allBooted(s) / ((moved(s) * 8) / 1e9)));
  row("server CPU (s, every process of its namespace)", (s) => fmt(s.cpuSeconds));
  row("disk bytes read (MiB, the XFS loop device)", (s) => MiB(s.diskBytesRead));
  row("page cache of the overlays + golden after (MiB)", (s) => MiB(s.pageCacheBytes));
  row(
    "datagrams dropped by the server's sockets (raw / UDP)",
    (s) => `${s.drops.raw} / ${s.drops.udp}`,
  );
  row("DHCP retries (DISCOVERs sent beyond one per phase)", (s) =>
    String(s.results.reduce((a, r) => a + Math.max(0, r.dhcpTries - 2), 0)),
  );
  row("scripts that said wait (PCs told to wait)", (s) => {
    const waited = s.results.filter((r) => (r.scriptWaits ?? 0) > 0).length;
    return `${s.results.reduce((a, r) => a + (r.scriptWaits ?? 0), 0)} (${waited})`;
  });
  const b = sides.find((s) => s.side === "bootfleet");
  const h = sides.find((s) => s.side === "handbuilt");
  if (b && h && booted(b).length === N && booted(h).length === N) {
    lines.push(
      "",
      `Ratio bootfleet / hand-built, time until all booted: ${(allBooted(b) / allBooted(h)).toFixed(2)}; server CPU: ${(b.cpuSeconds / h.cpuSeconds).toFixed(2)}`,
    );
  }
  return lines.join("\n");
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("needs root: namespaces, loop devices, tgtd");
  for (const tool of [
    "ip",
    "python3",
    "dnsmasq",
    "tgtd",
    "in.tftpd",
    "nginx",
    "fincore",
    "mkfs.xfs",
  ]) {
    execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
  }
  if (CPU_PROF) mkdirSync(CPU_PROF, { recursive: true });
  const set = loadBootSet();
  const { snap, commit } = buildSnapshot();
  makeLan();
  log(`LAN up: ${SERVER_NS} (br0 ${SERVER}) <- veth -> ${CLIENT_NS} (${N} macvlans)`);
  const fs = await mountLoopFs("xfs-reflink", 4 * 1024 ** 3, "storm");
  cleanups.push(() => fs.cleanup());
  const device = run("findmnt", ["-n", "-o", "SOURCE", fs.dir]).trim();
  const data = fs.dir;
  mkdirSync(join(data, "images"), { recursive: true });
  const golden = join(data, "images", "golden-v1.raw");
  writeGolden(golden, set);
  const machines = await seedStore(snap, data, golden);
  const overlay = (m: Machine) => join(data, "overlays", `t${m.targetId}-system.img`);
  const files = [golden, ...machines.map(overlay)];
  const sides: Side[] = [];

  // bootfleet first: it makes the overlays (reflink clones) both sides serve.
  let tgtd = await startTgtd();
  log("bootfleetd: starting (it applies every target before it says ready)");
  const daemon = await startBootfleet(snap, data);
  log("bootfleetd ready");
  await overnightDone(daemon, N);
  if (SIDES.includes("bootfleet")) {
    const side = await storm("bootfleet", set, device, files);
    sides.push(side);
    // For a look at the storm from inside: each target's "CHAP secret rotated" and "tgt
    // target applied" lines carry their times.
    if (DAEMON_LOG) writeFileSync(DAEMON_LOG, daemon.output());
    if (side.results.some((r) => !r.ok)) {
      const warnings = daemon
        .output()
        .split("\n")
        .filter((l) => /"level":(40|50|60)/.test(l));
      log(`bootfleetd's last warnings:\n${warnings.slice(-15).join("\n")}`);
    }
  }
  await stop(daemon);
  await stopTgtd(tgtd);

  if (SIDES.includes("handbuilt")) {
    tgtd = await startTgtd();
    log("hand-built: tgtadm loop for the same targets on the same overlays");
    const t0 = Date.now();
    await handBuiltTargets(machines, overlay);
    log(`hand-built: ${N} targets in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const procs = startHandBuilt(machines);
    await sleep(1000);
    for (const p of procs) {
      if (p.proc.exitCode !== null) throw new Error(`a hand-built server exited:\n${p.output()}`);
    }
    sides.push(await storm("handbuilt", set, device, files));
    for (const p of procs) await stop(p);
    await stopTgtd(tgtd);
  }
  const text = report(sides, set, commit);
  console.log(text);
  if (CPU_PROF) {
    for (const f of readdirSync(CPU_PROF).filter((x) => x.endsWith(".cpuprofile"))) {
      console.log(`\nCPU profile ${f} (self time):\n${topOfProfile(join(CPU_PROF, f))}`);
    }
  }
  if (JSON_OUT) writeFileSync(JSON_OUT, JSON.stringify({ commit, sides }, null, 2));
}

main()
  .catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => cleanup().then(() => process.exit()));
