import { mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import t from "tap";
import { loadOrCreateSigningKey } from "../../src/api/auth/keys.js";
import { issueBootToken } from "../../src/netboot/script/token.js";
import { type RunningDaemon, startDaemon, tempDir } from "../helpers/daemon.js";

// Site overrides of the boot script templates, against the real daemon: the script an
// unknown PC is served (the discovery loop, which anyone may fetch) follows the file in
// [netboot] templates_dir as it changes; a broken file is refused and the last good
// template keeps being served; machine values stay encoded whatever the template says.

const MAC = "52:54:00:aa:bb:cc";

/** Writes a file whole (temp name, then rename), as an admin's editor does. */
function put(dir: string, name: string, text: string): void {
  writeFileSync(join(dir, `.${name}.tmp`), text);
  renameSync(join(dir, `.${name}.tmp`), join(dir, name));
}

async function script(d: RunningDaemon, dataDir: string): Promise<string> {
  const key = loadOrCreateSigningKey(join(dataDir, "boot-token.key"));
  const token = issueBootToken(key, { mac: MAC, expiresAt: Date.now() + 60_000 });
  const r = await fetch(`http://127.0.0.1:${d.port}/boot/${MAC.replace(/:/g, "")}/${token}`, {
    signal: AbortSignal.timeout(10_000),
  });
  if (r.status !== 200) throw new Error(`script: ${r.status} ${await r.text()}`);
  return r.text();
}

/** Polls the served script until `ok` holds, at most `bound` ms (a bound, not an assertion). */
async function scriptUntil(
  d: RunningDaemon,
  dataDir: string,
  what: string,
  ok: (s: string) => boolean,
  bound = 30_000,
): Promise<string> {
  const deadline = Date.now() + bound;
  for (;;) {
    const s = await script(d, dataDir);
    if (ok(s)) return s;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}; served:\n${s}`);
    await sleep(100);
  }
}

const OVERRIDE_1 = `#!ipxe
# site override one
echo Site one: {{mac}} waits here.
set bf-message:hex {{message}}
echo \${bf-message:string}
sleep {{retrySeconds}}
chain --replace --autofree {{scriptUrl}}
`;

t.test("template overrides are served, reloaded, and refused when broken", async (t) => {
  const dataDir = tempDir(t, `bf-tpl-${process.pid}-`);
  const templates = join(dataDir, "site-templates");
  mkdirSync(templates);
  put(templates, "discovery.ipxe", OVERRIDE_1);
  const d = await startDaemon(t, {
    env: {
      BOOTFLEET_DATA_DIR: dataDir,
      BOOTFLEET_TFTP_ENABLED: "false",
      BOOTFLEET_NETBOOT_TEMPLATES_DIR: templates,
    },
  });

  const first = await script(d, dataDir);
  t.match(first, `Site one: ${MAC} waits here.`, "the override present at start is served");
  t.notMatch(first, "has been registered as discovered", "not the built-in one");
  // The machine-provided message is hex, whatever the template does with it.
  t.match(first, /^set bf-message:hex [0-9a-f:]+$/m);

  put(templates, "discovery.ipxe", OVERRIDE_1.replace("Site one", "Site two"));
  await scriptUntil(d, dataDir, "the changed override", (s) => s.includes("Site two"));
  t.pass("a changed override is served without a restart");

  await t.test("a broken override is refused, the previous one kept", async (t) => {
    for (const [why, text, error] of [
      ["unclosed section", "#!ipxe\n{{#mac}}\necho x\n", /is never closed/],
      ["unknown value", "#!ipxe\necho {{machinePassword}}\n", /no value named "machinePassword"/],
      ["raw machine text", "#!ipxe\necho {{&message}}\n", /needs admin-written code/],
      ["no magic line", "echo {{mac}}\n", /does not start with "#!ipxe"/],
    ] as const) {
      const seen = d.logs.length;
      put(templates, "discovery.ipxe", text);
      const line = await d.waitForLog(
        (l) =>
          d.logs.indexOf(l) >= seen &&
          l.msg === "boot script template override refused: the previous template stays",
        30_000,
      );
      t.match(String(line.err), error, `${why}: the log names the error`);
      t.match(String(line.file), "discovery.ipxe", `${why}: and the file`);
      t.match(await script(d, dataDir), "Site two", `${why}: the previous override is served`);
    }
    const password = readFileSync(join(dataDir, "initial-admin-password"), "utf8").trim();
    const login = await fetch(`http://127.0.0.1:${d.port}/api/auth/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "admin", password }),
    });
    const auth = ((await login.json()) as { access_token: string }).access_token;
    const alerts = (await (
      await fetch(`http://127.0.0.1:${d.port}/api/alerts?active=true`, {
        headers: { authorization: `Bearer ${auth}` },
      })
    ).json()) as { message: string }[];
    t.ok(
      alerts.some((a) => a.message.includes("discovery.ipxe")),
      "an alert names the refused file",
    );
  });

  unlinkSync(join(templates, "discovery.ipxe"));
  await scriptUntil(d, dataDir, "the built-in template", (s) =>
    s.includes("has been registered as discovered"),
  );
  t.pass("removing the override brings the built-in one back");
  d.proc.kill("SIGTERM");
  await d.exited;
});
