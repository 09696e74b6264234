import { execFile } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import t from "tap";
import WebSocket from "ws";
import { startDaemon, tempDir } from "../helpers/daemon.js";
import { openStream } from "./services-helpers.js";

const run = promisify(execFile);

/**
 * The built daemon with its services wired: /metrics answers, an upload limit from the
 * configuration applies, event streams receive, and SIGTERM does not wait on open streams.
 */
t.test("built daemon: services answer, and SIGTERM ends open event streams at once", async (t) => {
  const dir = tempDir(t, `bf-apisvc-daemon-${process.pid}-`);
  const d = await startDaemon(t, {
    env: {
      BOOTFLEET_DATA_DIR: dir,
      BOOTFLEET_TFTP_ENABLED: "false",
      BOOTFLEET_IMAGES_UPLOAD_MAX_BYTES: String(2 << 20),
      // a drain bound far above what the test allows: only closing the streams is fast
      BOOTFLEET_SHUTDOWN_DRAIN_TIMEOUT_MS: "20000",
    },
  });
  const base = `http://127.0.0.1:${d.port}`;
  const password = readFileSync(join(dir, "initial-admin-password"), "utf8").trim();
  const login = await fetch(`${base}/api/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: "admin", password }),
  });
  const { access_token: token } = (await login.json()) as { access_token: string };

  t.equal((await fetch(`${base}/api/health`)).status, 200);
  const metrics = await fetch(`${base}/metrics`);
  t.equal(metrics.status, 200);
  t.match(
    await metrics.text(),
    /bootfleet_api_requests_total\{method="GET",route="\/api\/health",status="200"\} 1/,
  );

  const storage = await fetch(`${base}/api/storage/info`, {
    headers: { authorization: `Bearer ${token}` },
  });
  t.equal(
    ((await storage.json()) as { images_storage: { path: string } }).images_storage.path,
    join(dir, "images"),
  );

  const sse = await openStream(`${base}/api/events?token=${token}`, {
    accept: "text/event-stream",
  });
  t.teardown(() => sse.close());
  const ws = new WebSocket(`ws://127.0.0.1:${d.port}/api/ws?token=${token}`);
  const messages: string[] = [];
  ws.on("message", (m) => messages.push(String(m)));
  const wsClosed = new Promise<number>((r) => ws.once("close", (code) => r(code)));
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
  });
  t.teardown(() => ws.terminate());

  // An upload over the configured limit: refused, and seen by nobody as an image.
  // curl, because it reads an answer that comes before the body is sent (fetch does not).
  const bigFile = join(dir, "big.raw");
  writeFileSync(bigFile, Buffer.alloc(3 << 20));
  const { stdout } = await run("curl", [
    "-sS",
    "-o",
    "/dev/null",
    "-w",
    "%{http_code}",
    "-H",
    `Authorization: Bearer ${token}`,
    "-F",
    `file=@${bigFile}`,
    "-F",
    "name=big",
    `${base}/api/images/upload`,
  ]);
  t.equal(stdout, "413", "[images] upload_max_bytes applies");
  // A client that waits for "100 Continue" (curl does, for a body this big) gets the 413
  // instead, before it sends a byte of the body: after a 100 the refusal raced the body
  // and curl reported a broken pipe instead of the daemon's answer.
  const first = await new Promise<string>((resolve, reject) => {
    const sock = connect(Number(d.port), "127.0.0.1", () => {
      sock.write(
        `POST /api/images/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
          `Authorization: Bearer ${token}\r\n` +
          "Content-Type: multipart/form-data; boundary=x\r\n" +
          `Content-Length: ${4 << 20}\r\nExpect: 100-continue\r\n\r\n`,
      );
    });
    let got = "";
    sock.on("data", (b) => {
      got += String(b);
      if (got.includes("\r\n")) {
        sock.destroy();
        resolve(got.slice(0, got.indexOf("\r\n")));
      }
    });
    sock.on("error", reject);
  });
  t.equal(
    first,
    "HTTP/1.1 413 Payload Too Large",
    "an oversized upload is refused before its body",
  );
  // A small one: both streams see it.
  const small = new FormData();
  small.set("name", "small");
  small.set("file", new Blob([Buffer.alloc(1 << 20, 3)]), "small.raw");
  const up = await fetch(`${base}/api/images/upload`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}` },
    body: small,
  });
  t.equal(up.status, 201);
  await sse.waitFor(/event: image_uploaded/);
  const deadline = Date.now() + 10_000;
  while (!messages.some((m) => m.includes('"image_uploaded"')) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  t.ok(
    messages.some((m) => m.includes('"image_uploaded"')),
    "the WebSocket saw the upload",
  );

  const started = Date.now();
  d.proc.kill("SIGTERM");
  t.equal(await d.exited, 0, "exit 0");
  const took = Date.now() - started;
  t.ok(took < 5000, `stopped in ${took} ms with two streams open (drain bound 20 s)`);
  await sse.ended;
  t.equal(await wsClosed, 1001, "the WebSocket was told the server is going away");
});
