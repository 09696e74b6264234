import { execFileSync } from "node:child_process";
import { chmodSync, chownSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import t, { type Test } from "tap";
import { ConfigError, type LoadedConfig, loadConfig } from "../../src/config/config.js";
import { adjustForPrivileges } from "../../src/daemon/unprivileged.js";
import type { Privileges } from "../../src/host/privileges.js";
import { DAEMON_BIN, startDaemon, tempDir } from "../helpers/daemon.js";

const root: Privileges = { isRoot: true, canBindLowPorts: true, canUseRawSockets: true };
const user: Privileges = { isRoot: false, canBindLowPorts: false, canUseRawSockets: false };
const emptyFile = join(tempDir(t), "empty.toml");
writeFileSync(emptyFile, "");

/** The configuration as loadConfig builds it, with root's defaults (port 80, TFTP 69, DHCP on). */
function load(env: Record<string, string> = {}, path = emptyFile): LoadedConfig {
  return loadConfig({
    env,
    privileges: root,
    path,
    cwd: "/srv/work",
    detectInterface: () => undefined,
    detectAddress: () => undefined,
  });
}

function adjustError(loaded: LoadedConfig, privileges = user): string {
  try {
    adjustForPrivileges(loaded, privileges);
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

t.test("defaults below 1024 move to the high ports, DHCP goes off, and it is said", async (t) => {
  const { config: c, changes } = adjustForPrivileges(load(), user);
  t.equal(c.http.listen, ":8080");
  t.equal(c.tftp.port, 6969);
  t.equal(c.dhcp.enabled, false);
  t.same(changes, [
    "HTTP moved from port 80 to 8080",
    "TFTP moved from port 69 to 6969",
    "proxy-DHCP off (needs CAP_NET_BIND_SERVICE and CAP_NET_RAW)",
  ]);
});

t.test("a normal user's own defaults are already high: nothing moves", async (t) => {
  const loaded = loadConfig({
    env: {},
    privileges: user,
    path: emptyFile,
    detectInterface: () => undefined,
    detectAddress: () => undefined,
  });
  const { config: c, changes } = adjustForPrivileges(loaded, user);
  t.equal(c.http.listen, ":8080");
  t.equal(c.tftp.port, 6969);
  t.same(changes, []);
});

t.test("port 0 (any free port) stays 0 for HTTP and TFTP", async (t) => {
  const loaded = load({ BOOTFLEET_HTTP_LISTEN: "127.0.0.1:0", BOOTFLEET_TFTP_PORT: "0" });
  const { config: c, changes } = adjustForPrivileges(loaded, user);
  t.equal(c.http.listen, "127.0.0.1:0");
  t.equal(c.tftp.port, 0);
  t.same(changes, ["proxy-DHCP off (needs CAP_NET_BIND_SERVICE and CAP_NET_RAW)"]);
});

t.test("explicit high ports are kept as they are", async (t) => {
  const loaded = load({ BOOTFLEET_HTTP_LISTEN: "[::1]:8443", BOOTFLEET_TFTP_PORT: "10069" });
  const { config: c } = adjustForPrivileges(loaded, user);
  t.equal(c.http.listen, "[::1]:8443");
  t.equal(c.tftp.port, 10069);
});

t.test("an explicit low HTTP port from the environment is an error naming the fix", async (t) => {
  const msg = adjustError(load({ BOOTFLEET_HTTP_LISTEN: "10.0.0.5:80" }));
  t.match(msg, '[http] listen = "10.0.0.5:80" (from environment BOOTFLEET_HTTP_LISTEN)');
  t.match(msg, /port 80 is below 1024/);
  t.match(msg, /run bootfleetd as root/);
  t.match(msg, /CAP_NET_BIND_SERVICE/);
  t.match(msg, /choose a port >= 1024/);
});

t.test("an explicit low port in the file is an error naming the file", async (t) => {
  const path = join(tempDir(t), "bootfleetd.toml");
  writeFileSync(path, '[http]\nlisten = ":8080"\n[tftp]\nport = 69\n');
  const msg = adjustError(load({}, path));
  t.match(msg, `[tftp] port = 69 (in ${path})`);
  t.match(msg, /CAP_NET_BIND_SERVICE/);
});

t.test("an explicit low TFTP port is no error while TFTP is off", async (t) => {
  const loaded = load({ BOOTFLEET_TFTP_PORT: "69", BOOTFLEET_TFTP_ENABLED: "false" });
  const { config: c } = adjustForPrivileges(loaded, user);
  t.equal(c.tftp.port, 69);
  t.equal(c.tftp.enabled, false);
});

t.test("with the right to bind low ports, nothing moves and nothing fails", async (t) => {
  const loaded = load({ BOOTFLEET_HTTP_LISTEN: "10.0.0.5:80", BOOTFLEET_TFTP_PORT: "69" });
  const asRoot = adjustForPrivileges(loaded, root);
  t.same(asRoot.changes, []);
  t.equal(asRoot.config.http.listen, "10.0.0.5:80");
  t.equal(asRoot.config.tftp.port, 69);
  // CAP_NET_BIND_SERVICE without CAP_NET_RAW: ports stay, DHCP goes off.
  const bindOnly = adjustForPrivileges(loaded, { ...user, canBindLowPorts: true });
  t.equal(bindOnly.config.http.listen, "10.0.0.5:80");
  t.same(bindOnly.changes, ["proxy-DHCP off (needs CAP_NET_BIND_SERVICE and CAP_NET_RAW)"]);
});

// A normal user's start: the daemon runs as uid 65534 (nobody) in a network namespace of
// its own (so port 8080 is free whatever the host runs).
const isRoot = process.getuid?.() === 0;
const rootSkip = isRoot
  ? false
  : "needs root to create a network namespace and switch to uid 65534";

/** A fresh network namespace with lo up, a world-writable data_dir, and the privilege drop. */
function unprivilegedPlace(t: Test) {
  const ns = `bf-unpriv-${process.pid}-${Math.floor(Math.random() * 1e6)}`;
  execFileSync("ip", ["netns", "add", ns]);
  t.teardown(() => execFileSync("ip", ["netns", "del", ns]));
  execFileSync("ip", ["netns", "exec", ns, "ip", "link", "set", "lo", "up"]);
  const dir = tempDir(t);
  chmodSync(dir, 0o777);
  // uid 65534 needs to read the checkout; where a CI clone sits in a private folder,
  // keep uid 0 but drop every capability, which is what the daemon actually checks.
  const asNobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
  let drop = asNobody;
  try {
    execFileSync(asNobody[0]!, [...asNobody.slice(1), "test", "-r", DAEMON_BIN]);
  } catch {
    drop = ["setpriv", "--inh-caps=-all", "--bounding-set=-all"];
    t.comment("checkout not readable by uid 65534: running as uid 0 without capabilities");
  }
  // The daemon makes data_dir 0750 at every start, which only its owner may do.
  if (drop === asNobody) chownSync(dir, 65534, 65534);
  return { ns, dir, drop };
}

t.test(
  "a non-root start with the defaults serves /api/health on 8080",
  { skip: rootSkip },
  async (t) => {
    const { ns, dir, drop } = unprivilegedPlace(t);
    const d = await startDaemon(t, {
      // The helper sets port 0 for HTTP and TFTP; `env -u` gives the daemon its defaults.
      wrapper: [
        "env",
        "-u",
        "BOOTFLEET_HTTP_LISTEN",
        "-u",
        "BOOTFLEET_TFTP_PORT",
        "-u",
        "BOOTFLEET_DHCP_ENABLED",
        "ip",
        "netns",
        "exec",
        ns,
        ...drop,
      ],
      env: { BOOTFLEET_DATA_DIR: dir },
    });
    t.equal(d.port, 8080, "HTTP on the unprivileged default, 8080");
    t.notOk(
      d.logs.some((l) => String(l.msg).startsWith("running unprivileged")),
      "nothing was moved: a normal user's defaults are already high",
    );
    const out = execFileSync(
      "ip",
      ["netns", "exec", ns, "curl", "-s", "-m", "5", "http://127.0.0.1:8080/api/health"],
      { encoding: "utf8" },
    );
    t.match(JSON.parse(out), { status: "healthy", service: "bootfleet" });
    d.proc.kill("SIGTERM");
    t.equal(await d.exited, 0);
  },
);

t.test(
  "a non-root start asked for port 0 gets a free port, not 8080",
  { skip: rootSkip },
  async (t) => {
    const { ns, dir, drop } = unprivilegedPlace(t);
    const d = await startDaemon(t, {
      wrapper: ["ip", "netns", "exec", ns, ...drop],
      env: { BOOTFLEET_DATA_DIR: dir, BOOTFLEET_DHCP_ENABLED: "true" },
    });
    t.ok(d.port !== undefined && d.port !== 8080 && d.port >= 1024, `HTTP on port ${d.port}`);
    const notes = d.logs.filter((l) => String(l.msg).startsWith("running unprivileged"));
    t.equal(notes.length, 1, "one log line says what changed");
    t.match(notes[0]?.msg, /proxy-DHCP off/);
    t.notMatch(notes[0]?.msg, /moved/, "no port moved");
    d.proc.kill("SIGTERM");
    t.equal(await d.exited, 0);
  },
);

t.test(
  "a non-root start told to use port 80 exits 2 naming the fix",
  { skip: rootSkip },
  async (t) => {
    const { ns, dir, drop } = unprivilegedPlace(t);
    const d = await startDaemon(t, {
      wrapper: ["ip", "netns", "exec", ns, ...drop],
      env: { BOOTFLEET_DATA_DIR: dir, BOOTFLEET_HTTP_LISTEN: "127.0.0.1:80" },
      waitReady: false,
    });
    t.equal(await d.exited, 2, "exit code 2, as for any configuration error");
    t.match(
      d.output(),
      /\[http\] listen = "127\.0\.0\.1:80" \(from environment BOOTFLEET_HTTP_LISTEN\)/,
    );
    t.match(d.output(), /CAP_NET_BIND_SERVICE/);
    t.match(d.output(), /^bootfleetd: \[http\] listen/, "the reason is the first thing said");
  },
);
