import { writeFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { BOOT_SECTOR_OK, startBootLan } from "../helpers/boot-lan.js";
import { tempDir } from "../helpers/daemon.js";

// What the operator's screen sees while a real BIOS PC boots: the events on the SSE
// stream, in order, and the machine's live state moving pxe → ipxe → script_served →
// iscsi_logged_in → booted (the target served it I/O).
const skip =
  process.getuid?.() === 0 ? false : "needs root: namespaces, loop-mounted XFS, tgtd, QEMU";
const BOOT_TIMEOUT = 150_000;
const MAC = "52:54:00:bf:60:0a";

interface Msg {
  id: number;
  type: string;
  payload: { machine_id?: number; state?: string };
}

t.test("a booting PC's events and live state, from the SSE stream", { skip }, async (t) => {
  const {
    lan,
    machineId,
    adminPassword: password,
  } = await startBootLan(t, {
    name: "bf-e2e-fleet",
    subnet: "10.99.0",
    mac: MAC,
    machineName: "fleet-pc",
  });
  const machine = { id: machineId };
  const secrets = tempDir(t, "bf-fleet-curl-");

  // Log in as the initial admin; secrets go through stdin and a 0600 file, never argv.
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
  const allMessages = (): Msg[] =>
    sse
      .logText()
      .split("\n")
      .filter((l) => l.startsWith("data: "))
      .map((l) => JSON.parse(l.slice(6)) as Msg);
  const messages = (): Msg[] => allMessages().filter((m) => m.payload?.machine_id === machine.id);
  // The stream is open once its first heartbeat or event arrives; give it the bound.
  for (let i = 0; i < 50 && !/\S/.test(sse.logText()); i++) {
    await new Promise((r) => setTimeout(r, 100));
  }

  t.equal(api("GET", `/machines/${machine.id}`).state, "unknown", "never booted yet");
  const pc = lan.startBiosClient({ bridge: "br0", mac: MAC });
  t.teardown(() => pc.kill());
  await pc.waitFor(BOOT_SECTOR_OK, BOOT_TIMEOUT);

  // Login is polled every second, I/O on the monitor's next tick: wait for booted, bounded.
  for (let i = 0; i < 300 && !messages().some((m) => m.payload.state === "booted"); i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  const order = messages().map((m) =>
    m.type === "machine_state" ? `state:${m.payload.state}` : m.type,
  );
  t.comment(`events of the boot, in order: ${order.join(", ")}`);
  // Every event the stream carried from power-on to booted, this machine's or not, one per
  // line, for the notes: what an operator's screen is told while a PC boots.
  for (const m of allMessages()) {
    const { machine_id, state, ...rest } = m.payload ?? {};
    const extra = Object.keys(rest).length ? ` ${JSON.stringify(rest)}` : "";
    t.comment(
      `event ${m.id}: ${m.type}${state ? ` ${state}` : ""}${machine_id === undefined ? " (no machine)" : ""}${extra}`,
    );
  }
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
