import { readFileSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { Store } from "../../src/store/index.js";
import { startDaemon, tempDir } from "../helpers/daemon.js";
import { TestLan } from "../helpers/lan.js";
import { mountLoopFs } from "../iscsi/overlay/loopfs.js";

// What the operator's screen sees while a real BIOS PC boots: the events on the SSE
// stream, in order, and the machine's live state moving pxe → ipxe → script_served →
// iscsi_logged_in → booted (the target served it I/O).
const skip =
  process.getuid?.() === 0 ? false : "needs root: namespaces, loop-mounted XFS, tgtd, QEMU";
const BOOT_TIMEOUT = 150_000;

// test/fixtures/boot/boot-sector.asm assembled (as in sanboot.test.ts): reads LBA 3 of
// its boot disk, prints DISKLESS-BOOT-OK, writes LBA 3, prints DISKLESS-WRITE-OK.
const BOOT_CODE =
  "fa31c08ed88ec08ed0bc007cfb8816687cb80102b9040030f68a16687cbb0080cd13722dbe697c803e0080577503be827ce82500b80103b9040030f68a16687cbbc47ccd13720abe9a7ce80c00faf4ebfcbeae7ce80200ebf4ac08c07409b40ebb0700cd10ebf2c3004449534b4c4553532d424f4f542d4f4b2046524553480d0a004449534b4c4553532d424f4f542d4f4b205345454e0d0a004449534b4c4553532d57524954452d4f4b0d0a004449534b4c4553532d4449534b2d4552524f520d0a005752495454454e2d42592d424f4f54";
const PREFIX = "iqn.2024-01.io.bootfleet";
const MAC = "52:54:00:bf:60:0a";

interface Msg {
  id: number;
  type: string;
  payload: { machine_id?: number; state?: string };
}

t.test("a booting PC's events and live state, from the SSE stream", { skip }, async (t) => {
  const lan = TestLan.create(t, "bf-e2e-fleet", [
    { bridge: "br0", address: "10.99.0.1", dhcpRange: ["10.99.0.50", "10.99.0.99"] },
  ]);
  const fs = await mountLoopFs("xfs-reflink", 2 * 1024 ** 3, "e2e-fleet");
  t.teardown(() => fs.cleanup());
  const data = fs.dir;
  const confDir = tempDir(t, "bf-tgt-conf-");
  const secrets = tempDir(t, "bf-fleet-curl-");

  const { mkdirSync } = await import("node:fs");
  mkdirSync(join(data, "images"), { recursive: true });
  const golden = join(data, "images", "golden.raw");
  const sector = Buffer.alloc(512);
  Buffer.from(BOOT_CODE, "hex").copy(sector);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  writeFileSync(golden, sector);
  truncateSync(golden, 64 * 1024 * 1024);

  const store = Store.open({ path: join(data, "bootfleet.db"), busyTimeoutMs: 1000 });
  const image = store.images.create({
    name: "Golden",
    filename: "golden.raw",
    status: "ready",
    format: "raw",
  });
  store.images.addVersion(image.id, { path: golden, size_bytes: 64 * 1024 * 1024 });
  const machine = store.machines.create({
    name: "fleet-pc",
    mac_address: MAC,
    status: "active",
    boot_action: "sanboot",
    overlay_policy: "persistent",
  });
  store.targets.create({
    name: "fleet-pc-target",
    iqn: `${PREFIX}:fleet-pc`,
    portal_ip: "10.99.0.1",
    machine_id: machine.id,
    system_image_id: image.id,
    initiator_iqn: `${PREFIX}:client-${MAC.replace(/:/g, "")}`,
    chap_username: "user-fleet",
    chap_password: "SecretFLEET0123456",
  });
  store.close();

  lan.startSiteDhcp(lan.subnets[0]!);
  const control = 20_000 + ((process.pid + 5_000) % 10_000);
  lan.spawn("tgtd", ["-f", "-C", String(control), "--iscsi", "portal=10.99.0.1:3260"]);
  t.teardown(() => {
    try {
      lan.exec("tgtadm", ["-C", String(control), "--op", "delete", "--mode", "system"]);
    } catch {
      // killed with the namespace's processes
    }
  });
  for (let i = 0; ; i++) {
    try {
      lan.exec("tgtadm", ["-C", String(control), "--op", "show", "--mode", "sys"]);
      break;
    } catch (err) {
      if (i > 100) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  await startDaemon(t, {
    wrapper: lan.wrapper,
    env: {
      BOOTFLEET_DATA_DIR: data,
      BOOTFLEET_HTTP_LISTEN: ":80",
      BOOTFLEET_TFTP_PORT: "69",
      BOOTFLEET_DHCP_ENABLED: "true",
      // The NIC's own iPXE chainloads bootfleet's over TFTP: the boot passes the ipxe phase.
      BOOTFLEET_DHCP_CHAINLOAD_NIC_IPXE: "true",
      BOOTFLEET_NETBOOT_INTERFACES: "br0",
      BOOTFLEET_ISCSI_TARGET_DRIVER: "tgt",
      BOOTFLEET_ISCSI_TGT_CONTROL_PORT: String(control),
      BOOTFLEET_ISCSI_TGT_CONF_DIR: confDir,
      BOOTFLEET_ISCSI_SESSION_POLL_MS: "1000",
    },
  });

  // Log in as the initial admin; secrets go through stdin and a 0600 file, never argv.
  const password = readFileSync(join(data, "initial-admin-password"), "utf8").trim();
  const login = JSON.parse(
    lan.exec(
      "curl",
      [
        "-sf",
        "-H",
        "content-type: application/json",
        "--data-binary",
        "@-",
        "http://10.99.0.1/api/auth/login",
      ],
      { input: JSON.stringify({ username: "admin", password }) },
    ),
  ) as { access_token: string };
  const curlConf = join(secrets, "curl.conf");
  writeFileSync(curlConf, `header = "Authorization: Bearer ${login.access_token}"\n`, {
    mode: 0o600,
  });
  const api = (method: string, path: string) =>
    JSON.parse(
      lan.exec("curl", ["-s", "-K", curlConf, "-X", method, `http://10.99.0.1/api${path}`]),
    );

  const sse = lan.spawn("curl", [
    "-sN",
    "-K",
    curlConf,
    "-H",
    "Accept: text/event-stream",
    "http://10.99.0.1/api/events",
  ]) as ReturnType<typeof lan.spawn> & { logText: () => string };
  const messages = (): Msg[] =>
    sse
      .logText()
      .split("\n")
      .filter((l) => l.startsWith("data: "))
      .map((l) => JSON.parse(l.slice(6)) as Msg)
      .filter((m) => m.payload?.machine_id === machine.id);
  // The stream is open once its first heartbeat or event arrives; give it the bound.
  for (let i = 0; i < 50 && !/\S/.test(sse.logText()); i++) {
    await new Promise((r) => setTimeout(r, 100));
  }

  t.equal(api("GET", `/machines/${machine.id}`).state, "unknown", "never booted yet");
  const pc = lan.startBiosClient({ bridge: "br0", mac: MAC });
  t.teardown(() => pc.kill());
  await pc.waitFor(/DISKLESS-BOOT-OK[\s\S]*DISKLESS-WRITE-OK/, BOOT_TIMEOUT);

  // Login is polled every second, I/O on the monitor's next tick: wait for booted, bounded.
  for (let i = 0; i < 300 && !messages().some((m) => m.payload.state === "booted"); i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  const order = messages().map((m) =>
    m.type === "machine_state" ? `state:${m.payload.state}` : m.type,
  );
  t.comment(`events of the boot, in order: ${order.join(", ")}`);
  const states = order.filter((x) => x.startsWith("state:")).map((x) => x.slice(6));
  t.same(
    states,
    ["pxe", "ipxe", "script_served", "iscsi_logged_in", "booted"],
    "the state moved through every phase, in order",
  );
  t.equal(order[0], "session_started", "session_started comes first");
  t.ok(
    order.indexOf("machine_online") > order.indexOf("state:iscsi_logged_in"),
    "machine_online once it logged in",
  );
  t.equal(order.filter((x) => x === "machine_online").length, 1, "online once");
  t.notOk(order.includes("machine_offline"), "never offline while booting");

  const m = api("GET", `/machines/${machine.id}`);
  t.equal(m.state, "booted", "the machine view says booted");
  t.equal(m.is_online, true);
  const session = api("GET", `/sessions?machine_id=${machine.id}&status=active`)[0];
  t.ok(session?.io_seen_at, "the target's I/O was seen on the session");
  t.equal(api("GET", "/alerts?active=true").length, 0, "no alert for a good boot");

  // No BMC: stopping cannot switch it off, and says so instead of pretending.
  const stop = api("POST", `/sessions/${session.session_id}/stop`);
  t.equal(stop.error, "conflict_error");
  t.match(stop.detail, /no BMC/);
  t.equal(api("GET", `/machines/${machine.id}`).state, "booted", "still booted");

  const health = api("GET", "/health/detailed");
  t.match(health.checks.services, {
    dhcp: { status: "healthy" },
    tftp: { status: "healthy" },
    http: { status: "healthy" },
    iscsi_driver: { status: "healthy", reason: /tgt answers/ },
  });
  t.comment(`overlay fs: ${JSON.stringify(health.checks.services.overlay_fs)}`);
});
