import { execFile } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { promisify } from "node:util";
import { pino } from "pino";
import t from "tap";
import { startHttpServer } from "../../src/daemon/http-server.js";
import { startDaemon, tempDir } from "../helpers/daemon.js";
import { smallTmpfs } from "../images/tmpfs.js";

const run = promisify(execFile);
const log = pino({ level: "silent" });

/**
 * Sends `chunks` pieces of a chunked body, one every `everyMs`, then ends it (or, with
 * `stall`, stops sending and waits): the outcome is the status, or how the socket ended.
 */
function trickle(
  port: number,
  path: string,
  o: { chunks: number; everyMs: number; stall?: boolean },
): Promise<{ status?: number; body?: string; cut?: string }> {
  return new Promise((resolve) => {
    const req = request({ host: "127.0.0.1", port, path, method: "POST" }, (res) => {
      let body = "";
      res.on("data", (d) => {
        body += d;
      });
      res.on("end", () => resolve({ status: res.statusCode!, body }));
      res.on("error", (e) => resolve({ cut: e.message }));
    });
    req.on("error", (e) => resolve({ cut: e.message }));
    let sent = 0;
    const tick = setInterval(() => {
      if (req.destroyed) return clearInterval(tick);
      req.write(Buffer.alloc(1024, 7));
      if (++sent >= o.chunks) {
        clearInterval(tick);
        if (!o.stall) req.end();
      }
    }, o.everyMs);
    // A bound on the whole test, not a timing: a cut that never comes fails the test.
    setTimeout(() => {
      clearInterval(tick);
      req.destroy();
      resolve({ cut: "test bound reached: the server never answered or cut" });
    }, 30_000).unref();
  });
}

t.test("uploads have an idle timeout, not a whole-request one", async (t) => {
  const server = await startHttpServer({
    listen: "127.0.0.1:0",
    log,
    timeouts: { requestTimeoutMs: 1000, uploadIdleTimeoutMs: 1500 },
    fetch: async (req) => new Response(String((await req.arrayBuffer()).byteLength)),
  });
  t.teardown(() => server.close(1000));
  const port = server.address.port;

  // 15 chunks, 200 ms apart: three times the whole-request bound, never idle.
  const slow = await trickle(port, "/api/images/upload", { chunks: 15, everyMs: 200 });
  t.equal(slow.status, 200, "a slow upload that keeps sending completes");
  t.equal(slow.body, String(15 * 1024), "with every byte");

  const idle = await trickle(port, "/api/images/upload", { chunks: 1, everyMs: 50, stall: true });
  t.notOk(idle.status, "an upload that stops sending gets no answer");
  t.match(idle.cut ?? "", /socket hang up|ECONNRESET|aborted/, `it is cut (${idle.cut})`);

  const other = await trickle(port, "/api/machines", { chunks: 15, everyMs: 200 });
  t.ok(
    other.status === 408 || other.cut !== undefined,
    `other requests keep their whole-request bound (${other.status ?? other.cut})`,
  );
});

const skip = process.getuid?.() === 0 ? false : "needs root: mounts a small tmpfs";

t.test(
  "an upload that would cross the free-space reserve gets 507 and leaves nothing",
  { skip },
  async (t) => {
    const data = smallTmpfs(t, 64 * 1024 * 1024, "reserve");
    const d = await startDaemon(t, {
      env: {
        BOOTFLEET_DATA_DIR: data,
        BOOTFLEET_TFTP_ENABLED: "false",
        BOOTFLEET_STORAGE_RESERVE_PERCENT: "50",
      },
    });
    const base = `http://127.0.0.1:${d.port}`;
    const password = readFileSync(join(data, "initial-admin-password"), "utf8").trim();
    const login = await fetch(`${base}/api/auth/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "admin", password }),
    });
    const { access_token: token } = (await login.json()) as { access_token: string };
    const file = join(tempDir(t), "big.raw");
    writeFileSync(file, Buffer.alloc(40 * 1024 * 1024, 1));
    const images = join(data, "images");

    for (const chunked of [false, true]) {
      const { stdout } = await run("curl", [
        "-sS",
        "-w",
        "\n%{http_code}",
        "-H",
        `Authorization: Bearer ${token}`,
        ...(chunked ? ["-H", "Transfer-Encoding: chunked"] : []),
        "-F",
        `file=@${file}`,
        "-F",
        "name=big",
        `${base}/api/images/upload`,
      ]);
      const lines = stdout.trim().split("\n");
      const how = chunked ? "length unknown" : "Content-Length known";
      t.equal(lines.at(-1), "507", `${how}: 507`);
      t.match(lines.slice(0, -1).join("\n"), /reserve_percent/, `${how}: the body says why`);
      // The drop folder (<images_dir>/import) is the daemon's own; nothing else may be there.
      t.same(
        readdirSync(images).filter((f) => f !== "import"),
        [],
        `${how}: no partial file left`,
      );
    }
    d.proc.kill("SIGTERM");
    await d.exited;
  },
);
