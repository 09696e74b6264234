import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { PassThrough, Readable } from "node:stream";
import pino from "pino";
import t from "tap";
import { createApi } from "../../src/api/app.js";
import { ensureInitialAdmin, INITIAL_PASSWORD_FILE } from "../../src/api/auth/initial-admin.js";
import { main } from "../../src/cli/main.js";
import { Store } from "../../src/store/index.js";

function io(stdinText: string) {
  const out = new PassThrough();
  const err = new PassThrough();
  let stdout = "";
  let stderr = "";
  out.on("data", (d) => (stdout += d));
  err.on("data", (d) => (stderr += d));
  return {
    io: { stdin: Readable.from([stdinText]), stdout: out, stderr: err },
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
  };
}

t.test(
  "bootfleet user add creates an admin who can log in; the one-time file goes away",
  async (t) => {
    const dir = t.testdir({});
    const cfg = join(dir, "bootfleetd.toml");
    writeFileSync(cfg, `data_dir = "${dir}"\n`);
    // as if the daemon had started once: initial admin and its file
    const first = Store.open({ path: join(dir, "bootfleet.db"), busyTimeoutMs: 2000 });
    await ensureInitialAdmin(first, join(dir, INITIAL_PASSWORD_FILE), pino({ level: "silent" }));
    first.close();

    const run = io("s3cret-admin-pw\n");
    const code = await main(
      [
        "user",
        "add",
        "ops",
        "--role",
        "admin",
        "--password-stdin",
        "--email",
        "ops@example.org",
        "--config",
        cfg,
      ],
      {},
      run.io as never,
    );
    t.equal(code, 0, run.stderr);
    t.match(run.stdout, /created user ops/);
    t.notMatch(run.stdout + run.stderr, "s3cret-admin-pw");
    t.notOk(
      existsSync(join(dir, INITIAL_PASSWORD_FILE)),
      "another admin exists: one-time file deleted",
    );

    const store = Store.open({ path: join(dir, "bootfleet.db"), busyTimeoutMs: 2000 });
    t.teardown(() => store.close());
    const { app } = createApi({
      log: pino({ level: "silent" }),
      version: "t",
      state: () => "ready",
      store,
      signingKey: new Uint8Array(32).fill(3),
    });
    const login = await app.request("/api/auth/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "ops", password: "s3cret-admin-pw" }),
    });
    t.equal(login.status, 200);
    const me = await app.request("/api/auth/me", {
      headers: {
        authorization: `Bearer ${((await login.json()) as { access_token: string }).access_token}`,
      },
    });
    t.match(await me.json(), { username: "ops", role: "admin", email: "ops@example.org" });

    const dup = io("another-password\n");
    t.equal(
      await main(
        ["user", "add", "ops", "--role", "admin", "--password-stdin", "--config", cfg],
        {},
        dup.io as never,
      ),
      1,
    );
    const weak = io("short\n");
    t.equal(
      await main(
        ["user", "add", "x", "--role", "viewer", "--password-stdin", "--config", cfg],
        {},
        weak.io as never,
      ),
      2,
    );
    t.match(weak.stderr, /password: at least 8/);
    const noStdin = io("");
    t.equal(
      await main(
        ["user", "add", "y", "--role", "viewer", "--config", cfg],
        {},
        noStdin.io as never,
      ),
      2,
    );
    t.equal(
      await main(
        ["user", "add", "z", "--role", "root", "--password-stdin", "--config", cfg],
        {},
        io("pw-pw-pw-pw\n").io as never,
      ),
      2,
    );
    const list = io("");
    t.equal(
      await main(["user", "list", "--config", cfg], { BOOTFLEET_DATA_DIR: dir }, list.io as never),
      0,
    );
    t.match(list.stdout, /\tops\tadmin\tactive/);
    t.ok(readFileSync(cfg, "utf8"));
  },
);
