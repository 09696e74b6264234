import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { ConfigError, loadConfig, parseListen, printableConfig } from "../../src/config/config.js";
import type { Privileges } from "../../src/host/privileges.js";
import { tempDir } from "../helpers/daemon.js";

const root: Privileges = { isRoot: true, canBindLowPorts: true, canUseRawSockets: true };
const user: Privileges = { isRoot: false, canBindLowPorts: false, canUseRawSockets: false };
const noDetect = { detectInterface: () => undefined, detectAddress: () => undefined };
const emptyFile = join(tempDir(t), "empty.toml");
writeFileSync(emptyFile, "");

function load(
  env: Record<string, string> = {},
  opts: { path?: string; privileges?: Privileges; cwd?: string } = {},
) {
  return loadConfig({
    env,
    privileges: opts.privileges ?? root,
    path: opts.path ?? emptyFile,
    cwd: opts.cwd ?? "/srv/work",
    ...noDetect,
  });
}

function loadError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

t.test("an explicit --config path that does not exist is an error naming it", async (t) => {
  const msg = loadError(() => load({}, { path: "/nonexistent/bootfleet-test/none.toml" }));
  t.match(msg, "/nonexistent/bootfleet-test/none.toml");
  t.match(msg, "no such file");
});

t.test("with no file, the embedded defaults are used and are complete", async (t) => {
  const { config, file } = loadConfig({
    env: {},
    privileges: root,
    cwd: "/srv/work",
    path: undefined,
    ...noDetect,
  });
  // The default path /etc/bootfleet/bootfleetd.toml is absent on a build machine.
  t.equal(file, undefined);
  t.equal(config.data_dir, "/var/lib/bootfleet");
  t.equal(config.images_dir, "/var/lib/bootfleet/images");
  t.equal(config.http.listen, ":80");
  t.equal(config.tftp.port, 69);
  t.equal(config.dhcp.enabled, true);
  t.equal(config.dhcp.mode, "proxy");
  t.equal(config.iscsi.target_driver, "auto");
  t.equal(config.iscsi.overlay_driver, "auto");
  t.equal(config.log.level, "info");
});

t.test("a normal user's defaults: ./var, high ports, DHCP off", async (t) => {
  const { config } = loadConfig({
    env: {},
    privileges: user,
    cwd: "/home/me/bf",
    path: undefined,
    ...noDetect,
  });
  t.equal(config.data_dir, "/home/me/bf/var");
  t.equal(config.http.listen, ":8080");
  t.equal(config.tftp.port, 6969);
  t.equal(config.dhcp.enabled, false);
});

t.test("netboot interface and server address default to the default route's", async (t) => {
  const { config } = loadConfig({
    env: {},
    privileges: root,
    path: undefined,
    detectInterface: () => "enp3s0",
    detectAddress: (i) => (i === "enp3s0" ? "192.168.7.2" : undefined),
  });
  t.same(config.netboot.interfaces, ["enp3s0"]);
  t.equal(config.netboot.server_address, "192.168.7.2");
});

t.test("environment overrides, by the names the README gives", async (t) => {
  const { config } = load({
    BOOTFLEET_HTTP_LISTEN: "10.99.0.1:80",
    BOOTFLEET_NETBOOT_INTERFACES: "br0, br1",
    BOOTFLEET_DATA_DIR: "/srv/bf",
    BOOTFLEET_DHCP_ENABLED: "false",
    BOOTFLEET_TFTP_PORT: "1069",
    BOOTFLEET_LOG_LEVEL: "debug",
  });
  t.equal(config.http.listen, "10.99.0.1:80");
  t.same(config.netboot.interfaces, ["br0", "br1"]);
  t.equal(config.data_dir, "/srv/bf");
  t.equal(config.images_dir, "/srv/bf/images", "derived keys follow data_dir");
  t.equal(config.dhcp.enabled, false);
  t.equal(config.tftp.port, 1069);
  t.equal(config.log.level, "debug");
});

t.test("file values override defaults and the environment overrides the file", async (t) => {
  const dir = tempDir(t);
  const path = join(dir, "bootfleetd.toml");
  writeFileSync(
    path,
    'data_dir = "/data/bf"\n[http]\nlisten = ":81"\n[iscsi]\ntarget_driver = "tgt"\n[log]\nlevel = "warn"\n',
  );
  const { config, file } = load({ BOOTFLEET_LOG_LEVEL: "error" }, { path });
  t.equal(file, path);
  t.equal(config.data_dir, "/data/bf");
  t.equal(config.http.listen, ":81");
  t.equal(config.iscsi.target_driver, "tgt");
  t.equal(config.log.level, "error");
  t.equal(config.tftp.port, 69, "keys the file does not set keep their defaults");
});

t.test("an invalid value names the key, the value and what was expected", async (t) => {
  const cases: [Record<string, string>, RegExp[]][] = [
    [
      { BOOTFLEET_HTTP_LISTEN: "abc" },
      [/\[http\] listen/, /"abc"/, /BOOTFLEET_HTTP_LISTEN/, /address and port/],
    ],
    [{ BOOTFLEET_TFTP_PORT: "seventy" }, [/\[tftp\] port/, /"seventy"/, /expected a number/]],
    [{ BOOTFLEET_TFTP_PORT: "70000" }, [/\[tftp\] port/, /70000/, /at most 65535/]],
    [
      { BOOTFLEET_ISCSI_TARGET_DRIVER: "iet" },
      [/\[iscsi\] target_driver/, /"iet"/, /"auto", "lio", "tgt"/],
    ],
    [{ BOOTFLEET_LOG_LEVEL: "loud" }, [/\[log\] level/, /"loud"/, /"info"/]],
    [{ BOOTFLEET_DHCP_ENABLED: "maybe" }, [/\[dhcp\] enabled/, /"maybe"/, /boolean/]],
    [
      { BOOTFLEET_NETBOOT_SERVER_ADDRESS: "10.0.0.300" },
      [/\[netboot\] server_address/, /10\.0\.0\.300/],
    ],
    [
      { BOOTFLEET_NETBOOT_INTERFACES: "br0,bad name;rm" },
      [/\[netboot\] interfaces/, /interface name/],
    ],
    [
      { BOOTFLEET_NETBOOT_ROUTED_SUBNETS: "10.20.0.0/24,10.30.0.0" },
      [/\[netboot\] routed_subnets/, /"10\.30\.0\.0"/, /IPv4 subnet such as "10\.20\.0\.0\/24"/],
    ],
    [
      { BOOTFLEET_NETBOOT_ROUTED_SUBNETS: "10.20.0.7/24" },
      [/\[netboot\] routed_subnets/, /host bits zero/],
    ],
  ];
  for (const [env, patterns] of cases) {
    const msg = loadError(() => load(env));
    for (const p of patterns) t.match(msg, p, `${JSON.stringify(env)} → ${msg}`);
    t.notMatch(msg, /\n/, "one line");
  }
});

t.test("the file: unknown keys, wrong tables and bad TOML are named", async (t) => {
  const dir = tempDir(t);
  const path = join(dir, "c.toml");
  writeFileSync(path, '[http]\nlisten_on = ":80"\n');
  t.match(
    loadError(() => load({}, { path })),
    /unknown key \[http\] listen_on/,
  );
  writeFileSync(path, '[dhcp]\nmode = "full"\n');
  t.match(
    loadError(() => load({}, { path })),
    /\[dhcp\] mode = "full" \(in .*c\.toml\): expected/,
  );
  writeFileSync(path, "http = 3\n");
  t.match(
    loadError(() => load({}, { path })),
    /\[http\] table/,
  );
  writeFileSync(path, "[http\nlisten=\n");
  t.match(
    loadError(() => load({}, { path })),
    /not valid TOML/,
  );
  if (process.getuid?.() !== 0) {
    writeFileSync(path, "");
    chmodSync(path, 0);
    t.match(
      loadError(() => load({}, { path })),
      /permission denied/,
    );
  }
});

t.test("relative paths resolve against the working directory", async (t) => {
  const { config } = load({ BOOTFLEET_DATA_DIR: "state", BOOTFLEET_IMAGES_DIR: "/big/images" });
  t.equal(config.data_dir, "/srv/work/state");
  t.equal(config.images_dir, "/big/images");
  t.equal(config.tftp.root, "/srv/work/state/tftp");
});

t.test("--print-config masks secrets and round-trips as TOML", async (t) => {
  const { config } = load();
  const withSecret = { ...config, vault: { jwt_secret: "s3cr3t-value", chap_password: "p4ss" } };
  const text = printableConfig(withSecret as unknown as typeof config);
  t.notMatch(text, /s3cr3t-value|p4ss/);
  t.match(text, /jwt_secret = "\*\*\*\*\*\*\*\*"/);
  t.match(text, /\[http\]\nlisten = ":80"/);
});

t.test("parseListen", async (t) => {
  t.same(parseListen(":80"), { host: undefined, port: 80 });
  t.same(parseListen("10.99.0.1:8080"), { host: "10.99.0.1", port: 8080 });
  t.same(parseListen("[::1]:80"), { host: "::1", port: 80 });
});
