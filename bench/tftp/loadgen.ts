// TFTP load generator: N concurrent clients, each fetching the same file R times in a row, with
// blksize / windowsize / tsize options (RFC 2347, 2348, 2349, 7440). Every block is compared with
// the expected file, so a fast but wrong server cannot win. It speaks only to 127.0.0.1.
//
// Run: node --import tsx bench/tftp/loadgen.ts '{"port":6969,"file":"snponly.efi",
//   "expected":"/usr/lib/ipxe/snponly.efi","clients":50,"rounds":4,"blksize":1468,"windowsize":8}'
// Prints one JSON line: bytes, seconds, MB/s, the generator's own CPU use, retransmissions.

import { createSocket, type Socket } from "node:dgram";
import { readFileSync } from "node:fs";

interface Config {
  port: number;
  file: string;
  expected: string;
  clients: number;
  rounds: number;
  blksize: number;
  windowsize: number;
  /** Per-packet wait before the client resends its last packet. */
  timeoutMs?: number;
}

interface Totals {
  bytes: number;
  transfers: number;
  failures: number;
  resends: number;
  errors: string[];
}

function rrq(name: string, blksize: number, windowsize: number): Buffer {
  const fields = [name, "octet", "tsize", "0", "blksize", String(blksize)];
  if (windowsize > 1) fields.push("windowsize", String(windowsize));
  return Buffer.concat([Buffer.from([0, 1]), Buffer.from(`${fields.join("\0")}\0`, "latin1")]);
}

function ackPacket(block: number): Buffer {
  return Buffer.from([0, 4, (block >> 8) & 0xff, block & 0xff]);
}

function oackOptions(buf: Buffer): Map<string, string> {
  const f = buf.subarray(2).toString("latin1").split("\0");
  const m = new Map<string, string>();
  for (let i = 0; i + 1 < f.length; i += 2) m.set(f[i]!.toLowerCase(), f[i + 1]!);
  return m;
}

/** One fetch on its own socket (a fresh TID per transfer, as firmware does). */
function fetchOnce(cfg: Config, expected: Buffer, totals: Totals): Promise<void> {
  return new Promise((resolve) => {
    // Sends go to a literal address: skip dgram's per-send dns.lookup and its extra tick, which
    // otherwise makes the generator the bottleneck sooner.
    const sock: Socket = createSocket({
      type: "udp4",
      lookup: (host, _opts, cb) => cb(null, host, 4),
    });
    const timeoutMs = cfg.timeoutMs ?? 1000;
    let tid: number | undefined;
    let blksize = 512;
    let windowsize = 1;
    let expectedBlock = 1; // absolute
    let sinceAck = 0;
    let last: Buffer = rrq(cfg.file, cfg.blksize, cfg.windowsize);
    let lastPort = cfg.port;
    let tries = 0;
    let done = false;
    const finish = (error?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (error === undefined) {
        totals.transfers++;
        totals.bytes += expected.length;
      } else {
        totals.failures++;
        if (totals.errors.length < 5) totals.errors.push(error);
      }
      sock.close();
      resolve();
    };
    const send = (buf: Buffer, port: number) => {
      last = buf;
      lastPort = port;
      sock.send(buf, port, "127.0.0.1");
    };
    const timer = setTimeout(function onTimeout() {
      if (++tries > 10) return finish("timed out");
      totals.resends++;
      sock.send(last, lastPort, "127.0.0.1");
      timer.refresh();
    }, timeoutMs);
    sock.on("message", (msg, rinfo) => {
      if (tid === undefined) tid = rinfo.port;
      if (rinfo.port !== tid || msg.length < 4) return;
      const op = msg.readUInt16BE(0);
      tries = 0;
      timer.refresh();
      if (op === 5)
        return finish(`error ${msg.readUInt16BE(2)}: ${msg.subarray(4).toString("latin1")}`);
      if (op === 6) {
        const o = oackOptions(msg);
        blksize = Number(o.get("blksize") ?? 512);
        windowsize = Number(o.get("windowsize") ?? 1);
        const tsize = o.get("tsize");
        if (tsize !== undefined && Number(tsize) !== expected.length)
          return finish(`tsize ${tsize}`);
        send(ackPacket(0), tid);
        return;
      }
      if (op !== 3) return;
      const block = msg.readUInt16BE(2);
      if (block !== (expectedBlock & 0xffff)) {
        // A gap or a resend: ask for what follows the last block we have (RFC 7440).
        send(ackPacket((expectedBlock - 1) & 0xffff), tid);
        sinceAck = 0;
        return;
      }
      const offset = (expectedBlock - 1) * blksize;
      const payload = msg.subarray(4);
      if (!payload.equals(expected.subarray(offset, offset + payload.length))) {
        return finish(`block ${expectedBlock} differs from the file`);
      }
      expectedBlock++;
      sinceAck++;
      const isLast = payload.length < blksize;
      if (isLast) {
        if (offset + payload.length !== expected.length) return finish("short file");
        // Close only once the final ACK is on the wire: closing first drops it unsent, and the
        // server then resends its last block until it gives up.
        sock.send(ackPacket(block), tid, "127.0.0.1", () => finish());
        return;
      }
      if (sinceAck >= windowsize) {
        send(ackPacket(block), tid);
        sinceAck = 0;
      }
    });
    sock.bind(0, "127.0.0.1", () => {
      sock.setRecvBufferSize(1 << 20);
      send(last, cfg.port);
    });
  });
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? "{}") as Config;
  const expected = readFileSync(cfg.expected);
  const totals: Totals = { bytes: 0, transfers: 0, failures: 0, resends: 0, errors: [] };
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: cfg.clients }, async () => {
      for (let r = 0; r < cfg.rounds; r++) await fetchOnce(cfg, expected, totals);
    }),
  );
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  process.stdout.write(
    `${JSON.stringify({
      ...totals,
      seconds,
      mbPerSec: totals.bytes / 1e6 / seconds,
      generatorCpu: (cpu.user + cpu.system) / 1e6 / seconds,
    })}\n`,
  );
}

await main();
