import { execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import t from "tap";

const run = promisify(execFile);
const root = new URL("../../", import.meta.url).pathname;
const seed = readFileSync(new URL("./fixtures/ggnet-api.md", import.meta.url), "utf8");

/**
 * The built daemon, started for real: the first-start password file, a login over HTTP,
 * and the seed's curl login example run verbatim (host aside) with curl.
 */
t.test("built daemon: first-start password file and real logins over HTTP", async (t) => {
  // The built daemon: `npm test` builds dist/ before tap, once, for every test file.
  t.ok(existsSync(join(root, "dist/daemon/main.js")), "built");
  const dir = mkdtempSync(join(tmpdir(), `bf-api-daemon-${process.pid}-`));
  const child = spawn(process.execPath, ["bin/bootfleetd.js"], {
    cwd: root,
    env: {
      PATH: process.env.PATH,
      BOOTFLEET_DATA_DIR: dir,
      BOOTFLEET_HTTP_LISTEN: "127.0.0.1:0",
      BOOTFLEET_DHCP_ENABLED: "false",
      BOOTFLEET_TFTP_ENABLED: "false",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  child.stdout.on("data", (d) => (log += d));
  child.stderr.on("data", (d) => (log += d));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  t.teardown(async () => {
    if (child.exitCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  });

  const deadline = Date.now() + 30_000;
  while (!/bootfleetd ready/.test(log) && child.exitCode === null && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
  }
  t.match(log, /bootfleetd ready/, "daemon ready");
  const port = Number(
    /"port":(\d+)[^\n]*HTTP listening|HTTP listening[^\n]*"port":(\d+)/
      .exec(log)
      ?.slice(1)
      .find(Boolean),
  );
  t.ok(port > 0, `port ${port}`);
  const base = `http://127.0.0.1:${port}`;

  const file = join(dir, "initial-admin-password");
  t.equal(statSync(file).mode & 0o777, 0o600, "one-time password file is 0600");
  const password = readFileSync(file, "utf8").trim();
  t.match(log, file, "its path is logged");
  t.notMatch(log, password, "its content is not");

  const login = await fetch(`${base}/api/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: "admin", password }),
  });
  t.equal(login.status, 200);
  const tokens = (await login.json()) as { access_token: string };
  const me = (await (
    await fetch(`${base}/api/auth/me`, {
      headers: { authorization: `Bearer ${tokens.access_token}` },
    })
  ).json()) as { id: number };

  // the seed's example credentials: set them, then log in with the seed's curl line
  const put = await fetch(`${base}/api/users/${me.id}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${tokens.access_token}`, "content-type": "application/json" },
    body: JSON.stringify({ password: "admin123" }),
  });
  t.equal(put.status, 200);
  t.notOk(existsSync(file), "file deleted once the admin changed the password");

  const example =
    /TOKEN=\$\((curl -X POST "http:\/\/your-server\/api\/auth\/login"[\s\S]*?)\n\s*\|\s*jq/.exec(
      seed,
    )?.[1];
  t.ok(example, "the seed's curl login example");
  // the example ends in a line continuation before its "| jq": cut there
  const script = example!.replace("http://your-server", base).replace(/\\\s*$/, "");
  const { stdout } = await run("bash", ["-c", script], { timeout: 15_000 });
  const body = JSON.parse(stdout) as {
    access_token: string;
    token_type: string;
    expires_in: number;
  };
  t.equal(body.token_type, "bearer");
  t.equal(body.expires_in, 1800);
  const who = await fetch(`${base}/api/auth/me`, {
    headers: { authorization: `Bearer ${body.access_token}` },
  });
  t.equal(who.status, 200);
  t.notMatch(log, password);
  t.notMatch(log, "admin123");

  child.kill("SIGTERM");
  await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
  t.equal(child.exitCode, 0, "stopped cleanly");
});
