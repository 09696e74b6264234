import t from "tap";
import { maskedConfig } from "../../src/config/config.js";
import type { OverlayDriver } from "../../src/iscsi/overlay/types.js";
import { Reconciler } from "../../src/iscsi/reconciler.js";
import type { TargetDriver, TargetSession } from "../../src/iscsi/target/types.js";
import { fleetApi } from "./fleet-helpers.js";

async function withTarget(
  f: Awaited<ReturnType<typeof fleetApi>>,
  name: string,
  mac: string,
  bmc: boolean,
) {
  const image = f.store.images.create({
    name: `${name}-img`,
    filename: `${name}.raw`,
    status: "ready",
  });
  const machine = f.store.machines.create({
    name,
    mac_address: mac,
    ...(bmc ? { bmc_address: "10.9.9.8", bmc_username: "ipmi", bmc_password: "Bmc-Secret-3" } : {}),
  });
  const target = f.store.targets.create({
    name: `${name}-target`,
    iqn: `iqn.2024-01.io.bootfleet:${name}`,
    portal_ip: "10.99.0.1",
    machine_id: machine.id,
    system_image_id: image.id,
    initiator_iqn: `iqn.2024-01.io.bootfleet.client:${name}`,
    chap_username: `u-${name}`,
    chap_password: "chap-pass",
  });
  return { machine, target };
}

t.test(
  "sessions: start wakes the machine and follows its phases; stop never pretends",
  async (t) => {
    const f = await fleetApi(t);
    const op = await f.user("se-op", "operator");
    const wol = await withTarget(f, "se-wol", "52:54:00:40:00:01", false);
    const bmc = await withTarget(f, "se-bmc", "52:54:00:40:00:02", true);

    const start = await f.http("POST", "/api/sessions/start", op.token, {
      target_id: wol.target.id,
    });
    t.equal(start.status, 201);
    t.same(f.woken, ["52:54:00:40:00:01"], "Wake-on-LAN sent");
    t.match(start.json, { status: "starting", power: { method: "wol" } });
    const sid = start.json.session_id as string;
    t.equal(
      (await f.http("GET", `/api/machines/${wol.machine.id}`, op.token)).json.state,
      "waking",
    );
    // The PC's own PXE request lands on the same session.
    f.store.sessions.stampPhase(wol.machine.id, "dhcp_offer_at");
    t.equal(f.store.sessions.current(wol.machine.id)!.session_id, sid);
    t.equal((await f.http("GET", `/api/machines/${wol.machine.id}`, op.token)).json.state, "pxe");

    // No BMC and the machine is booting: bootfleet cannot switch it off, and says so.
    const refused = await f.http("POST", `/api/sessions/${sid}/stop`, op.token);
    t.equal(refused.status, 409);
    t.match(refused.json.detail, /has no BMC/);
    t.equal(f.store.sessions.getBySessionId(sid)!.status, "starting", "the session goes on");

    // With a BMC: powered off, ended for real.
    const s2 = await f.http("POST", "/api/sessions/start", op.token, { target_id: bmc.target.id });
    t.equal(s2.status, 201);
    t.match(s2.json.power, { method: "ipmi" });
    const sid2 = s2.json.session_id as string;
    const row = f.store.sessions.getBySessionId(sid2)!;
    f.store.sessions.update(row.id, { status: "active", iscsi_login_at: new Date().toISOString() });
    f.fleet.evaluate();
    const stop = await f.http("POST", `/api/sessions/${sid2}/stop`, op.token);
    t.equal(stop.status, 200);
    t.match(stop.json, { status: "stopped", message: /powered off through its BMC/ });
    const offCall = f.ipmiCalls.at(-1)!;
    t.equal(offCall.at(-1), "off", "chassis power off was sent");
    t.notMatch(JSON.stringify(f.ipmiCalls), /Bmc-Secret-3/, "no BMC password on a command line");
    t.ok(
      f.events.some((e) => e.type === "session_stopped" && e.payload.session_id === sid2),
      "session_stopped sent",
    );
    t.equal((await f.http("POST", `/api/sessions/${sid2}/stop`, op.token)).status, 409);

    // The iSCSI poll sees the initiator still logged in (tgtd has not noticed the power
    // loss yet): it must not reopen the session the operator ended.
    let live: TargetSession[] = [{ initiatorIqn: bmc.target.initiator_iqn }];
    const driver = {
      name: "tgt",
      firstLun: 1,
      sessions: async () => live,
    } as unknown as TargetDriver;
    const reconciler = new Reconciler({
      store: f.store,
      targets: driver,
      overlays: {} as OverlayDriver,
      log: (await import("pino")).pino({ level: "silent" }),
      imagePath: () => undefined,
      portal: { address: "10.99.0.1", port: 3260 },
    });
    await reconciler.pollSessions();
    t.equal(f.store.sessions.current(bmc.machine.id), undefined, "not reopened by the poll");
    live = [];
    await reconciler.pollSessions();
    t.ok(f.store.sessions.getBySessionId(sid2)!.iscsi_logout_at, "its logout is stamped");
    live = [{ initiatorIqn: bmc.target.initiator_iqn }];
    await reconciler.pollSessions();
    t.equal(
      f.store.sessions.current(bmc.machine.id)?.status,
      "active",
      "a new login is a new session",
    );

    // A driver that reads every target's sessions at once (tgt: one listing) is asked once
    // per poll, never per target.
    let allCalls = 0;
    let perTargetCalls = 0;
    const bulk = {
      name: "tgt",
      firstLun: 1,
      sessions: async () => {
        perTargetCalls++;
        return [];
      },
      allSessions: async () => {
        allCalls++;
        return new Map<string, TargetSession[]>([[bmc.target.iqn, []]]);
      },
    } as unknown as TargetDriver;
    const bulkReconciler = new Reconciler({
      store: f.store,
      targets: bulk,
      overlays: {} as OverlayDriver,
      log: (await import("pino")).pino({ level: "silent" }),
      imagePath: () => undefined,
      portal: { address: "10.99.0.1", port: 3260 },
    });
    await bulkReconciler.pollSessions();
    t.same([allCalls, perTargetCalls], [1, 0], "one allSessions call, no sessions(iqn)");
    t.equal(
      f.store.sessions.current(bmc.machine.id),
      undefined,
      "the logout it shows ends the session",
    );

    // Power on that fails: the session records why, and the answer says so.
    const broken = await fleetApi(t, { ipmiFails: true });
    const op2 = await broken.user("se-op2", "operator");
    const b = await withTarget(broken, "se-broken", "52:54:00:40:00:03", true);
    const failed = await broken.http("POST", "/api/sessions/start", op2.token, {
      target_id: b.target.id,
    });
    t.equal(failed.status, 502);
    t.match(failed.json.detail, /power on failed/);
    const ended = broken.store.sessions.getBySessionId(failed.json.session_id)!;
    t.equal(ended.status, "error");
    t.match(ended.error, /power on failed/);
  },
);

t.test("config is shown with secrets masked; health names each service", async (t) => {
  const masked = maskedConfig({
    data_dir: "/var/lib/bootfleet",
    iscsi: { chap_secret: "s3cret", portal_port: 3260 },
    auth: { admin_password: "" },
  } as never);
  t.same(masked, {
    data_dir: "/var/lib/bootfleet",
    iscsi: { chap_secret: "********", portal_port: 3260 },
    auth: { admin_password: "" },
  });
  const f = await fleetApi(t, {
    components: {
      dhcp: { status: "healthy", reason: "proxy-DHCP on br0 (10.99.0.1)" },
      tftp: { status: "disabled", reason: "disabled in the configuration" },
      http: { status: "healthy", reason: "listening" },
      iscsi_driver: { status: "unhealthy", reason: "tgt: tgtd not running" },
      overlay_fs: { status: "healthy", reason: "reflink overlays usable" },
    },
  });
  const viewer = await f.user("cf-viewer", "viewer");
  const client = await f.user("cf-client", "client");
  const cfg = await f.http("GET", "/api/config", viewer.token);
  t.equal(cfg.status, 200);
  t.equal(cfg.json.bmc.password, "********");
  t.equal((await f.http("GET", "/api/config", client.token)).status, 403);
  const h = await f.http("GET", "/api/health/detailed", viewer.token);
  t.equal(h.status, 503, "an unhealthy service makes the whole unhealthy");
  t.equal(h.json.status, "unhealthy");
  t.match(h.json.checks.services.iscsi_driver, { status: "unhealthy", reason: /tgtd not running/ });
  t.equal(h.json.checks.services.tftp.status, "disabled");
  t.type(h.json.checks.system.cpu_percent, "number");
  t.ok(Array.isArray(h.json.checks.system.disks), "disks (with their type) listed");
  t.ok(Array.isArray(h.json.checks.system.network), "NICs with link speed listed");
  t.ok(h.json.checks.system.memory.total_mb > 0);
});
