import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import t from "tap";
import { httpGet, startDaemon, tempDir } from "../helpers/daemon.js";
import { startNotifyListener } from "../helpers/notify-listener.js";

// These tests run the built daemon (dist/, made by `npm run build`, which `npm test` runs first).

t.test("health answers in the GGnet shape once ready", async (t) => {
  const d = await startDaemon(t, { env: { BOOTFLEET_DATA_DIR: tempDir(t) } });
  const res = await httpGet(`http://127.0.0.1:${d.port}/api/health`);
  t.equal(res.status, 200);
  const body = JSON.parse(res.body) as Record<string, unknown>;
  t.equal(body.status, "healthy");
  t.equal(body.service, "bootfleet");
  t.match(body.version, /^\d+\.\d+\.\d+/);
  t.ok(!Number.isNaN(Date.parse(String(body.timestamp))), "timestamp is a date");
});

t.test(
  "a restart checks the one-time password file once it serves, and deletes a stale one",
  async (t) => {
    const dir = tempDir(t);
    const file = join(dir, "initial-admin-password");
    const first = await startDaemon(t, { env: { BOOTFLEET_DATA_DIR: dir } });
    // A first start makes the admin before it answers: whoever sees the 200 may read the file.
    t.equal((await httpGet(`http://127.0.0.1:${first.port}/api/health`)).status, 200);
    t.ok(readFileSync(file, "utf8").trim().length >= 20, "the first start wrote the password");
    first.proc.kill("SIGTERM");
    t.equal(await first.exited, 0);

    // While stopped, the file stopped opening the admin account (as if the password changed).
    writeFileSync(file, "not-the-admin-password\n", { mode: 0o600 });
    const again = await startDaemon(t, { env: { BOOTFLEET_DATA_DIR: dir } });
    const deleted = await again.waitForLog((l) =>
      l.msg.startsWith("one-time admin password file deleted"),
    );
    t.equal(deleted.path, file);
    t.notOk(existsSync(file), "the stale file is gone");
    const order = again.logs.map((l) => l.msg);
    t.ok(
      order.indexOf("bootfleetd ready") < order.indexOf(deleted.msg),
      "checked after ready, not on the way to the first request",
    );
    again.proc.kill("SIGTERM");
    t.equal(await again.exited, 0);
  },
);

t.test(
  "systemd: READY=1 after listening, WATCHDOG=1 at half the period, STOPPING=1 on SIGTERM",
  async (t) => {
    const dir = tempDir(t);
    const sock = join(dir, "notify.sock");
    const listener = await startNotifyListener(t, sock);
    const d = await startDaemon(t, {
      env: { BOOTFLEET_DATA_DIR: dir, NOTIFY_SOCKET: sock, WATCHDOG_USEC: "400000" },
    });
    const ready = await listener.waitFor((m) => m.includes("READY=1"));
    t.match(ready, /STATUS=HTTP 127\.0\.0\.1:0/, "STATUS carries a short summary");
    t.match(ready, new RegExp(`MAINPID=${d.proc.pid}`));
    // Ready is only sent once the HTTP listener answers.
    t.equal((await httpGet(`http://127.0.0.1:${d.port}/api/health`)).status, 200);
    await listener.waitFor((m) => m === "WATCHDOG=1");
    const start = Date.now();
    const before = listener.messages.filter((m) => m === "WATCHDOG=1").length;
    await new Promise((r) => setTimeout(r, 1000));
    const pings = listener.messages.filter((m) => m === "WATCHDOG=1").length - before;
    // Half of 400 ms is 200 ms: about 5 pings a second; allow for a slow CI machine.
    t.ok(pings >= 2 && pings <= 7, `${pings} watchdog pings in ${Date.now() - start} ms`);
    d.proc.kill("SIGTERM");
    await listener.waitFor((m) => m.startsWith("STOPPING=1"));
    t.equal(await d.exited, 0);
  },
);

t.test("no watchdog pings when systemd asks for none", async (t) => {
  const dir = tempDir(t);
  const sock = join(dir, "notify.sock");
  const listener = await startNotifyListener(t, sock);
  const d = await startDaemon(t, { env: { BOOTFLEET_DATA_DIR: dir, NOTIFY_SOCKET: sock } });
  await listener.waitFor((m) => m.includes("READY=1"));
  await new Promise((r) => setTimeout(r, 500));
  t.notOk(listener.messages.includes("WATCHDOG=1"));
  d.proc.kill("SIGTERM");
  t.equal(await d.exited, 0);
});

t.test(
  "SIGHUP re-reads the file: the log level changes live, restart-only keys are named",
  async (t) => {
    const dir = tempDir(t);
    const config = join(dir, "bootfleetd.toml");
    writeFileSync(config, `data_dir = "${dir}"\n[log]\nlevel = "info"\n`);
    const d = await startDaemon(t, { args: ["--config", config] });
    await httpGet(`http://127.0.0.1:${d.port}/api/health`);
    await new Promise((r) => setTimeout(r, 200));
    t.notOk(
      d.logs.some((l) => l.msg === "request"),
      "no debug request lines at info",
    );

    writeFileSync(
      config,
      `data_dir = "${dir}"\n[log]\nlevel = "debug"\n[shutdown]\ndrain_timeout_ms = 1234\n[tftp]\nmax_transfers = 7\n`,
    );
    d.proc.kill("SIGHUP");
    const reloaded = await d.waitForLog((l) => l.msg === "configuration reloaded");
    t.same(reloaded.keys, ["log.level"]);
    const restart = await d.waitForLog((l) =>
      l.msg.startsWith("configuration changes that need a restart"),
    );
    t.same((restart.keys as string[]).sort(), ["shutdown.drain_timeout_ms", "tftp.max_transfers"]);
    await httpGet(`http://127.0.0.1:${d.port}/api/health`);
    const line = await d.waitForLog((l) => l.msg === "request", 5000);
    t.equal(line.path, "/api/health", "debug lines appear after the reload");

    writeFileSync(config, `data_dir = "${dir}"\n[log]\nlevel = "shouty"\n`);
    d.proc.kill("SIGHUP");
    const refused = await d.waitForLog((l) => l.msg.startsWith("configuration reload refused"));
    t.match(refused.reason, /\[log\] level = "shouty"/);
    t.equal((await httpGet(`http://127.0.0.1:${d.port}/api/health`)).status, 200, "still serving");
  },
);

t.test(
  "SIGTERM: a request in flight completes, then the daemon exits 0 within its bound",
  async (t) => {
    const d = await startDaemon(t, {
      env: { BOOTFLEET_DATA_DIR: tempDir(t), BOOTFLEET_SHUTDOWN_DRAIN_TIMEOUT_MS: "5000" },
    });
    // A client that sends its request body slowly: the request is in flight when SIGTERM
    // arrives, and the daemon must read it to the end and answer it before exiting.
    const body = JSON.stringify({ username: "nobody-here", password: "wrong-password" });
    const answered = new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = request(
        {
          host: "127.0.0.1",
          port: d.port,
          method: "POST",
          path: "/api/auth/login",
          headers: {
            "content-type": "application/json",
            "content-length": Buffer.byteLength(body),
          },
        },
        (res) => {
          let text = "";
          res.on("data", (c: Buffer) => {
            text += c.toString();
          });
          res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
        },
      );
      req.on("error", reject);
      req.write(body.slice(0, 10));
      setTimeout(() => {
        d.proc.kill("SIGTERM");
        setTimeout(() => req.end(body.slice(10)), 700);
      }, 300);
    });
    const started = Date.now();
    const res = await answered;
    t.equal(res.status, 401, "the login was read to its end and answered (wrong credentials)");
    t.match(JSON.parse(res.text), { error: "authentication_error" });
    t.equal(await d.exited, 0, "exit code 0");
    t.ok(Date.now() - started < 5000 + 2000, "within the drain bound");
    t.ok(
      d.logs.some((l) => l.msg === "stopped"),
      "database closed and stop logged",
    );
  },
);

t.test("SIGTERM with nothing in flight exits promptly", async (t) => {
  const d = await startDaemon(t, { env: { BOOTFLEET_DATA_DIR: tempDir(t) } });
  const started = Date.now();
  d.proc.kill("SIGTERM");
  t.equal(await d.exited, 0);
  t.ok(Date.now() - started < 3000, `stopped in ${Date.now() - started} ms`);
});

t.test("start-up failures are one clear line, never a stack trace", async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, "bootfleet.db"), Buffer.alloc(4096, 0x42));
  const d = await startDaemon(t, { env: { BOOTFLEET_DATA_DIR: dir }, waitReady: false });
  t.equal(await d.exited, 1);
  t.match(d.output(), /corrupt or not a bootfleet database/);
  t.notMatch(d.output(), /\n\s+at /, "no stack trace");

  const bad = await startDaemon(t, { env: { BOOTFLEET_HTTP_LISTEN: "nowhere" }, waitReady: false });
  t.equal(await bad.exited, 2, "configuration errors exit 2 so systemd does not restart-loop");
  t.match(bad.output(), /invalid configuration: \[http\] listen = "nowhere"/);

  const first = await startDaemon(t, { env: { BOOTFLEET_DATA_DIR: tempDir(t) } });
  const second = await startDaemon(t, {
    env: { BOOTFLEET_DATA_DIR: tempDir(t), BOOTFLEET_HTTP_LISTEN: `127.0.0.1:${first.port}` },
    waitReady: false,
  });
  t.equal(await second.exited, 1);
  t.match(second.output(), /already in use/);
  t.notMatch(second.output(), /\n\s+at /, "no stack trace");
});

t.test("[api] rate_limit_per_minute sets the daemon's general limit; 0 turns it off", async (t) => {
  // Unauthenticated requests are counted per address, before the 401: no login needed.
  const statuses = async (port: number | undefined, n: number) => {
    const out: { status: number; limit: string | undefined }[] = [];
    for (let i = 0; i < n; i++) {
      const res = await fetch(`http://127.0.0.1:${port}/api/machines`);
      await res.arrayBuffer();
      out.push({ status: res.status, limit: res.headers.get("x-ratelimit-limit") ?? undefined });
    }
    return out;
  };
  const limited = await startDaemon(t, {
    env: { BOOTFLEET_DATA_DIR: tempDir(t), BOOTFLEET_API_RATE_LIMIT_PER_MINUTE: "3" },
  });
  const a = await statuses(limited.port, 4);
  t.same(
    a.map((r) => r.status),
    [401, 401, 401, 429],
    "the fourth request in the minute is refused",
  );
  t.equal(a[0]!.limit, "3", "and the limit is announced");

  const open = await startDaemon(t, {
    env: { BOOTFLEET_DATA_DIR: tempDir(t), BOOTFLEET_API_RATE_LIMIT_PER_MINUTE: "0" },
  });
  const b = await statuses(open.port, 150);
  t.ok(
    b.every((r) => r.status === 401 && r.limit === undefined),
    "150 requests: none refused, no limit announced",
  );
});
