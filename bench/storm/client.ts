// The boot storm's clients, run by bench/storm/run.ts inside the client namespace. Each client
// is one PC: its own MAC (a macvlan interface of the namespace) and its own address, doing a
// BIOS PC's whole netboot in order:
//   dhcp      PXE ROM DISCOVER on 67 -> OFFER (raw frames from 0.0.0.0, dhcp-raw.py)
//   pxe4011   PXE boot server REQUEST to 4011 -> ACK with the boot file
//   tftp      the boot file (undionly.kpxe) over TFTP, blksize 1456 as PXE ROMs ask
//   ipxeDhcp  iPXE's own DISCOVER (user class iPXE) -> OFFER with the script URL (4011 when the
//             OFFER names no file)
//   http      the iPXE script, and the scripts it chains to (the hand-built stack's per-MAC
//             file; bootfleet's "not ready" script again after its sleep) until one sanboots
//   login     iSCSI login with CHAP to the target the script names
//   replay    the recorded boot set's reads (READ(10), one at a time), then logout
// Prints one JSON object: per client, each phase's milliseconds and the bytes moved.
//
//   node --import tsx bench/storm/client.ts CONFIG.json

import { spawn } from "node:child_process";
import { createSocket, type Socket } from "node:dgram";
import { readFileSync } from "node:fs";
import { request } from "node:http";
import { createInterface } from "node:readline";
import { IscsiSession } from "./iscsi-initiator.js";

export interface StormClientConfig {
  server: string;
  /** The lower interface the DHCP helper sends its raw frames on. */
  ifname: string;
  clients: { mac: string; ip: string }[];
  /** "lba,blocks" per read, already clipped by run.ts. */
  reads: [number, number][];
  /** Client k powers on at k * spreadMs / N ms. */
  spreadMs: number;
  /** Each client gives up after this many seconds. */
  limitSeconds: number;
}

export const PHASES = ["dhcp", "pxe4011", "tftp", "ipxeDhcp", "http", "login", "replay"] as const;
export type Phase = (typeof PHASES)[number];

export interface ClientResult {
  mac: string;
  ok: boolean;
  error?: string;
  /** Milliseconds per phase. */
  ms: Partial<Record<Phase, number>>;
  /** From the storm's start to the end of the replay. */
  doneAtMs?: number;
  startAtMs: number;
  tftpBytes: number;
  httpBytes: number;
  iscsiBytes: number;
  dhcpTries: number;
  /** Scripts that told the PC to wait (bootfleet's "disk not ready": sleep, then ask again). */
  scriptWaits: number;
}

const cfg = JSON.parse(readFileSync(process.argv[2]!, "utf8")) as StormClientConfig;
const HERE = new URL(".", import.meta.url).pathname;

// ---------------------------------------------------------------- DHCP DISCOVER (raw helper)

interface Offer {
  id: number;
  ok: boolean;
  tries: number;
  file?: string;
  server?: string;
  opt43?: string;
}

const helper = spawn("python3", [`${HERE}dhcp-raw.py`, cfg.ifname], {
  stdio: ["pipe", "pipe", "inherit"],
});
const offerWaiters = new Map<number, (o: Offer) => void>();
let nextOfferId = 0;
let helperReady: () => void;
const ready = new Promise<void>((res) => {
  helperReady = res;
});
createInterface({ input: helper.stdout! }).on("line", (line) => {
  const o = JSON.parse(line) as Offer & { ready?: boolean };
  if (o.ready) return helperReady();
  offerWaiters.get(o.id)?.(o);
  offerWaiters.delete(o.id);
});

function discover(mac: string, ipxe: boolean): Promise<Offer> {
  const id = ++nextOfferId;
  return new Promise((resolve) => {
    offerWaiters.set(id, resolve);
    helper.stdin!.write(`${JSON.stringify({ id, mac, ipxe, tries: 4 })}\n`);
  });
}

// ---------------------------------------------------------------- 4011 REQUEST

function macBytes(mac: string): Buffer {
  return Buffer.from(mac.replace(/:/g, ""), "hex");
}

function opt(code: number, value: Buffer): Buffer {
  return Buffer.concat([Buffer.from([code, value.length]), value]);
}

/**
 * The code -> value map of DHCP-style options (code, length, value; 0 pads, 255 ends) from
 * `start`: a packet's options after the magic cookie, and the PXE sub-options in option 43.
 * A code given twice keeps its last value.
 */
function tlvOptions(buf: Buffer, start: number): Map<number, Buffer> {
  const found = new Map<number, Buffer>();
  for (let k = start; k + 1 < buf.length; ) {
    const code = buf[k]!;
    if (code === 255) break;
    if (code === 0) {
      k++;
      continue;
    }
    const n = buf[k + 1]!;
    found.set(code, buf.subarray(k + 2, k + 2 + n));
    k += 2 + n;
  }
  return found;
}

/** The boot item (PXE vendor sub-option 71) of an OFFER's option 43, to echo on 4011. */
function bootItem(opt43hex: string | undefined): Buffer | undefined {
  const menu = tlvOptions(Buffer.from(opt43hex ?? "", "hex"), 0);
  const items = menu.get(9); // boot menu: type (2), description length, description
  if (!items || items.length < 2) return undefined;
  return Buffer.concat([items.subarray(0, 2), Buffer.from([0, 0])]); // type, layer 0
}

function request4011(
  sock: Socket,
  c: { mac: string; ip: string },
  ipxe: boolean,
  item: Buffer | undefined,
): Promise<string> {
  const xid = Math.floor(Math.random() * 0xffffffff);
  const h = Buffer.alloc(240);
  h[0] = 1;
  h[1] = 1;
  h[2] = 6;
  h.writeUInt32BE(xid, 4);
  Buffer.from(c.ip.split(".").map(Number)).copy(h, 12); // ciaddr
  macBytes(c.mac).copy(h, 28);
  h.writeUInt32BE(0x63825363, 236);
  const mac = macBytes(c.mac);
  const parts = [
    h,
    opt(53, Buffer.from([3])),
    opt(60, Buffer.from("PXEClient:Arch:00000:UNDI:002001")),
    opt(93, Buffer.from([0, 0])),
    opt(94, Buffer.from([1, 2, 1])),
    opt(97, Buffer.concat([Buffer.from([0]), mac, mac, Buffer.alloc(4, 0xbf)])),
  ];
  if (ipxe) parts.push(opt(77, Buffer.from("iPXE")), opt(175, Buffer.from([19, 1, 1])));
  if (item) parts.push(opt(43, Buffer.concat([opt(71, item), Buffer.from([255])])));
  parts.push(Buffer.from([255]));
  const pkt = Buffer.concat(parts);
  return new Promise((resolve, reject) => {
    let tries = 0;
    let timer: NodeJS.Timeout | undefined;
    const onMsg = (m: Buffer) => {
      if (m.length < 240 || m[0] !== 2 || m.readUInt32BE(4) !== xid) return;
      const bootfile = tlvOptions(m, 240).get(67);
      const file = bootfile
        ? bootfile.toString("latin1")
        : m.subarray(108, 236).toString("latin1").split("\0")[0]!;
      clearTimeout(timer);
      sock.off("message", onMsg);
      resolve(file.replace(/\0+$/, ""));
    };
    sock.on("message", onMsg);
    const send = () => {
      if (++tries > 5) {
        sock.off("message", onMsg);
        reject(new Error(`4011: no ACK after ${tries - 1} REQUESTs`));
        return;
      }
      sock.send(pkt, 4011, cfg.server);
      timer = setTimeout(send, 1000 * 2 ** (tries - 1));
    };
    send();
  });
}

// ---------------------------------------------------------------- TFTP

function tftpGet(c: { ip: string }, name: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const sock = createSocket({ type: "udp4", lookup: (h, _o, cb) => cb(null, h, 4) });
    const blksize = 1456;
    let tid: number | undefined;
    let expect = 1;
    let size = 0;
    let useBlk = 512;
    let last: Buffer = Buffer.alloc(0);
    let lastPort = 69;
    let resends = 0;
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        if (++resends > 10) {
          sock.close();
          reject(new Error(`tftp ${name}: no answer`));
          return;
        }
        sock.send(last, lastPort, cfg.server);
        arm();
      }, 1000);
    };
    const put = (b: Buffer, port: number) => {
      last = b;
      lastPort = port;
      sock.send(b, port, cfg.server);
      arm();
    };
    const ack = (block: number, port: number) =>
      put(Buffer.from([0, 4, (block >> 8) & 0xff, block & 0xff]), port);
    sock.on("message", (m, rinfo) => {
      if (tid === undefined) tid = rinfo.port;
      if (rinfo.port !== tid) return;
      const op = m.readUInt16BE(0);
      if (op === 5) {
        clearTimeout(timer);
        sock.close();
        reject(new Error(`tftp ${name}: error ${m.subarray(4).toString("latin1")}`));
      } else if (op === 6) {
        const f = m.subarray(2).toString("latin1").split("\0");
        for (let i = 0; i + 1 < f.length; i += 2)
          if (f[i]!.toLowerCase() === "blksize") useBlk = Number(f[i + 1]);
        ack(0, tid);
      } else if (op === 3) {
        const block = m.readUInt16BE(2);
        if (block === (expect & 0xffff)) {
          size += m.length - 4;
          expect++;
          if (m.length - 4 < useBlk) {
            clearTimeout(timer);
            sock.send(Buffer.from([0, 4, (block >> 8) & 0xff, block & 0xff]), tid, cfg.server);
            sock.close();
            resolve(size);
            return;
          }
        }
        ack((expect - 1) & 0xffff, tid);
      }
    });
    sock.bind(0, c.ip, () => {
      const fields = [name, "octet", "tsize", "0", "blksize", String(blksize)];
      put(Buffer.concat([Buffer.from([0, 1]), Buffer.from(`${fields.join("\0")}\0`)]), 69);
    });
  });
}

// ---------------------------------------------------------------- HTTP

function httpGet(url: string, localAddress: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(url, { localAddress, agent: false, timeout: 60_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (d: Buffer) => chunks.push(d));
      res.on("end", () => {
        const body = Buffer.concat(chunks).toString("utf8");
        if (res.statusCode !== 200) reject(new Error(`GET ${url}: ${res.statusCode} ${body}`));
        else resolve(body);
      });
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${url}: time-out`)));
    req.on("error", reject);
    req.end();
  });
}

interface SanbootScript {
  initiator: string;
  username: string;
  password: string;
  server: string;
  port: number;
  lun: number;
  target: string;
}

/** The iPXE settings the bench needs, from `set name[:hex] value` lines and `sanboot`. */
function readScript(text: string): SanbootScript {
  const vars = new Map<string, string>();
  for (const m of text.matchAll(/^set ([a-z-]+)(:hex)? (.*)$/gm)) {
    const value = m[2] ? Buffer.from(m[3]!.replace(/:/g, ""), "hex").toString("utf8") : m[3]!;
    vars.set(m[1]!, value.trim());
  }
  const uri = /^sanboot (?:--drive \S+ )?(iscsi:\S+)/m.exec(text)?.[1];
  const parts = uri ? /^iscsi:([^:]+):[^:]*:(\d*):(\d*):(.+)$/.exec(uri) : null;
  if (!parts)
    throw new Error(`script: no sanboot iscsi: URI in ${JSON.stringify(text.slice(0, 200))}`);
  const need = (k: string) => {
    const v = vars.get(k);
    if (!v) throw new Error(`script: no "set ${k}"`);
    return v;
  };
  return {
    initiator: need("initiator-iqn"),
    username: need("username"),
    password: need("password"),
    server: parts[1]!,
    port: Number(parts[2] || 3260),
    lun: Number(parts[3] || 0),
    target: parts[4]!,
  };
}

// ---------------------------------------------------------------- one PC

/** A PC's result before any step of its boot has happened. */
function notBootedYet(mac: string): ClientResult {
  return {
    mac,
    ok: false,
    ms: {},
    startAtMs: 0,
    tftpBytes: 0,
    httpBytes: 0,
    iscsiBytes: 0,
    dhcpTries: 0,
    scriptWaits: 0,
  };
}

async function bootOne(c: { mac: string; ip: string }, k: number): Promise<ClientResult> {
  const r = notBootedYet(c.mac);
  await new Promise((res) => setTimeout(res, (k * cfg.spreadMs) / cfg.clients.length));
  r.startAtMs = performance.now() - start;
  let t = performance.now();
  const lap = (p: Phase) => {
    const now = performance.now();
    r.ms[p] = now - t;
    t = now;
  };
  const sock = createSocket({ type: "udp4", reuseAddr: true });
  await new Promise<void>((res, rej) => {
    sock.once("error", rej);
    sock.bind(68, c.ip, () => res());
  });
  try {
    const offer = await discover(c.mac, false);
    r.dhcpTries += offer.tries;
    if (!offer.ok) throw new Error("dhcp: no OFFER");
    lap("dhcp");
    const item = bootItem(offer.opt43);
    const file = (await request4011(sock, c, false, item)) || offer.file || "";
    if (!file) throw new Error("4011: no boot file");
    lap("pxe4011");
    r.tftpBytes = await tftpGet(c, file);
    lap("tftp");
    const ipxe = await discover(c.mac, true);
    r.dhcpTries += ipxe.tries;
    if (!ipxe.ok) throw new Error("ipxe dhcp: no OFFER");
    const url = ipxe.file || (await request4011(sock, c, true, bootItem(ipxe.opt43)));
    if (!/^https?:\/\//.test(url)) throw new Error(`ipxe dhcp: boot file ${url} is not a URL`);
    lap("ipxeDhcp");
    let script = await httpGet(url, c.ip);
    r.httpBytes += script.length;
    // Scripts that chain on are followed as iPXE runs them, until one sanboots: the hand-built
    // stack's boot.ipxe chains to the per-MAC file at once; bootfleet's "not ready" script
    // (ipxe/discovery.ipxe) sleeps first, then asks for the script again. Its sleeps are slept:
    // a PC told to wait is late by that much, not failed.
    for (;;) {
      if (/^sanboot /m.test(script)) break;
      const chain = /^chain (?:--\S+ )*(\S+)/m.exec(script);
      if (!chain) break; // readScript below names what the script lacks
      const waitS = [...script.slice(0, chain.index).matchAll(/^sleep (\d+)$/gm)].reduce(
        (a, m) => a + Number(m[1]),
        0,
      );
      if (waitS > 0) {
        r.scriptWaits++;
        // The PC's limit would end it during the wait: stop here with the script's reason.
        if (performance.now() - start + waitS * 1000 > cfg.limitSeconds * 1000) break;
        await new Promise((res) => setTimeout(res, waitS * 1000));
      }
      const next = chain[1]!
        .replace(/\$\{net0\/mac:hexhyp\}/g, c.mac.replace(/:/g, "-"))
        .replace(/\$\{net0\/mac\}|\$\{mac\}/g, c.mac);
      script = await httpGet(next, c.ip);
      r.httpBytes += script.length;
    }
    const s = readScript(script);
    lap("http");
    const session = await IscsiSession.login({
      host: s.server,
      port: s.port,
      localAddress: c.ip,
      initiator: s.initiator,
      target: s.target,
      lun: s.lun,
      chap: { username: s.username, password: s.password },
    });
    lap("login");
    try {
      for (const [lba, blocks] of cfg.reads) await session.read10(lba, blocks);
      await session.logout();
    } finally {
      r.iscsiBytes = session.bytesRead;
      session.destroy();
    }
    lap("replay");
    r.ok = true;
    r.doneAtMs = performance.now() - start;
  } catch (err) {
    r.error = err instanceof Error ? err.message : String(err);
  } finally {
    sock.close();
  }
  return r;
}

function withLimit(p: Promise<ClientResult>, mac: string): Promise<ClientResult> {
  return Promise.race([
    p,
    new Promise<ClientResult>((res) =>
      setTimeout(
        () => res({ ...notBootedYet(mac), error: `not booted within ${cfg.limitSeconds} s` }),
        cfg.limitSeconds * 1000,
      ).unref(),
    ),
  ]);
}

// The storm's clock starts once the DHCP helper has its sockets (Python starts slowly here).
await ready;
const start = performance.now();
const results = await Promise.all(cfg.clients.map((c, k) => withLimit(bootOne(c, k), c.mac)));
helper.stdin!.end();
helper.kill();
process.stdout.write(`${JSON.stringify({ results, wallMs: performance.now() - start })}\n`);
process.exit(0);
