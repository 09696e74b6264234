import { readFileSync } from "node:fs";
import { request } from "node:http";
import t from "tap";
import { startDaemon, tempDir } from "../helpers/daemon.js";

// A hostile client POSTs a huge body to the public login route. Before the cap, a
// 300 MB body took the daemon from 84 MB to 953 MB resident: the body was buffered
// whole before JSON.parse. Runs the built daemon (dist/, `npm run build`).

const MB = 1024 * 1024;

function kib(pid: number, field: "VmRSS" | "VmHWM"): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(
    readFileSync(`/proc/${pid}/status`, "utf8"),
  );
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

interface Sent {
  status: number;
  body: string;
  bytesSent: number;
}

/** Streams up to `total` bytes (chunked unless `declare`), stopping at the first answer. */
function postHuge(port: number, total: number, declare: boolean): Promise<Sent> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { "content-type": "application/json" };
    if (declare) headers["content-length"] = total;
    const req = request({
      host: "127.0.0.1",
      port,
      method: "POST",
      path: "/api/auth/login",
      headers,
    });
    let bytesSent = 0;
    let answered = false;
    const chunk = Buffer.alloc(MB, "a");
    req.on("response", (res) => {
      answered = true;
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        body += d;
      });
      res.on("end", () => {
        req.destroy();
        resolve({ status: res.statusCode ?? 0, body, bytesSent });
      });
    });
    // The server may close its side after the 413: a write error then is expected.
    req.on("error", (err) => {
      if (!answered) reject(err);
    });
    const pump = () => {
      while (!answered && bytesSent < total) {
        const first = bytesSent === 0 ? Buffer.from('{"username":"') : undefined;
        const piece = first ?? chunk;
        bytesSent += piece.length;
        if (!req.write(piece)) {
          req.once("drain", pump);
          return;
        }
      }
      if (!answered) req.end('"}');
    };
    if (declare) {
      // Send the headers alone: the answer must come without any of the body.
      req.flushHeaders();
      setTimeout(pump, 0);
    } else pump();
  });
}

t.test("a 300 MB chunked body to /api/auth/login is refused with 413, unbuffered", async (t) => {
  const d = await startDaemon(t, { env: { BOOTFLEET_DATA_DIR: tempDir(t) } });
  const pid = d.proc.pid!;
  const before = kib(pid, "VmRSS");
  const sent = await postHuge(d.port!, 300 * MB, false);
  const peak = kib(pid, "VmHWM");
  const after = kib(pid, "VmRSS");
  t.comment(
    `RSS before ${(before / MB).toFixed(1)} MB, peak ${(peak / MB).toFixed(1)} MB, after ${(after / MB).toFixed(1)} MB; client sent ${(sent.bytesSent / MB).toFixed(1)} MB before the answer`,
  );
  t.equal(sent.status, 413, "413 Payload Too Large");
  const body = JSON.parse(sent.body) as { error: string; detail: string; max_bytes: number };
  t.equal(body.error, "payload_too_large");
  t.match(body.detail, /at most 65536 bytes/, "the error says the limit");
  // Buffering 300 MB (as a string, then parsed) cannot fit in 64 MB of growth.
  t.ok(peak - before < 64 * MB, `peak RSS grew by ${((peak - before) / MB).toFixed(1)} MB`);
  // The daemon still answers normal requests.
  const ok = await postHuge(d.port!, 0, false).catch(() => undefined);
  t.ok(ok && ok.status !== 413, "a small login body is not refused as too large");
});

t.test("a Content-Length above the cap is refused before the body is read", async (t) => {
  const d = await startDaemon(t, { env: { BOOTFLEET_DATA_DIR: tempDir(t) } });
  const sent = await postHuge(d.port!, 300 * MB, true);
  t.equal(sent.status, 413);
  t.match(sent.body, /Content-Length is 314572800/);
  t.ok(sent.bytesSent < 64 * MB, `answered after ${(sent.bytesSent / MB).toFixed(1)} MB`);
});
