import t from "tap";
import { fleetApi, STALL_MS } from "./fleet-helpers.js";

t.test(
  "a boot that stalls raises one alert naming its phase; events follow the boot",
  async (t) => {
    const f = await fleetApi(t);
    const op = await f.user("al-op", "operator");
    const viewer = await f.user("al-viewer", "viewer");
    const alice = await f.user("al-alice", "client");
    const image = f.store.images.create({ name: "Golden", filename: "g.raw", status: "ready" });
    const pc = f.store.machines.create({ name: "lab-pc-1", mac_address: "52:54:00:10:00:01" });
    const other = f.store.machines.create({
      name: "lab-pc-2",
      mac_address: "52:54:00:10:00:02",
      owner_user_id: alice.user.id,
    });
    const target = f.store.targets.create({
      name: "lab-pc-1-target",
      iqn: "iqn.2024-01.io.bootfleet:lab-pc-1",
      portal_ip: "10.99.0.1",
      machine_id: pc.id,
      system_image_id: image.id,
      initiator_iqn: "iqn.2024-01.io.bootfleet.client:lab-pc-1",
      chap_username: "u1",
      chap_password: "p1",
    });
    f.fleet.evaluate();
    const stateOf = async () =>
      (await f.http("GET", `/api/machines/${pc.id}`, op.token)).json.state as string;
    t.equal(await stateOf(), "unknown", "never booted");

    f.store.sessions.stampPhase(pc.id, "dhcp_offer_at");
    f.fleet.evaluate();
    t.equal(await stateOf(), "pxe");
    f.store.sessions.stampPhase(pc.id, "tftp_done_at");
    f.fleet.evaluate();
    t.equal(await stateOf(), "ipxe");
    f.store.sessions.stampPhase(pc.id, "script_served_at");
    f.fleet.evaluate();
    t.equal(await stateOf(), "script_served");

    // Past the bound with no login: stalled, one alert, one system_alert.
    f.clock.skewMs = STALL_MS + 5_000;
    f.fleet.evaluate();
    f.fleet.evaluate();
    const m = (await f.http("GET", `/api/machines/${pc.id}`, op.token)).json;
    t.equal(m.state, "stalled");
    t.equal(m.state_detail.phase, "script_served");
    const active = await f.http("GET", "/api/alerts?active=true", viewer.token);
    t.equal(active.status, 200);
    t.equal(active.json.length, 1, "one active alert per cause per machine");
    const alert = active.json[0];
    t.match(alert, {
      cause: "stall",
      severity: "warning",
      machine_id: pc.id,
      machine_name: "lab-pc-1",
      active: true,
      acknowledged: false,
      count: 2,
    });
    t.equal(alert.detail.phase, "script_served");
    t.match(alert.message, /stalled in phase script_served/);
    t.match(alert.detail.likely_causes.join(" "), /CHAP mismatch/);
    const sysAlerts = f.events.filter((e) => e.type === "system_alert");
    t.equal(sysAlerts.length, 1, "announced once");
    t.match(sysAlerts[0]!.payload, { level: "warning", source: "stall", alert_id: alert.id });

    // Filters and who may see and act.
    t.equal((await f.http("GET", "/api/alerts?severity=critical", op.token)).json.length, 0);
    t.equal((await f.http("GET", `/api/alerts?machine_id=${other.id}`, op.token)).json.length, 0);
    t.equal((await f.http("GET", "/api/alerts?acknowledged=false", op.token)).json.length, 1);
    t.equal((await f.http("GET", "/api/alerts", alice.token)).json.length, 0, "a client: own only");
    t.equal((await f.http("GET", `/api/alerts/${alert.id}`, alice.token)).status, 404);
    t.equal((await f.http("GET", "/api/alerts?active=maybe", op.token)).status, 422);
    t.equal(
      (await f.http("POST", `/api/alerts/${alert.id}/acknowledge`, viewer.token)).status,
      403,
    );
    const ack = await f.http("POST", `/api/alerts/${alert.id}/acknowledge`, op.token);
    t.equal(ack.status, 200);
    t.match(ack.json, { acknowledged: true, active: true, acknowledged_by: op.user.id });
    t.equal((await f.http("GET", "/api/alerts?acknowledged=false", op.token)).json.length, 0);
    t.equal((await f.http("POST", "/api/alerts/999999/acknowledge", op.token)).status, 404);

    // It logs in and reads: booted, the stall is over (kept as history).
    f.clock.skewMs = 0;
    const s = f.store.sessions.current(pc.id)!;
    f.store.sessions.update(s.id, {
      status: "active",
      target_id: target.id,
      iscsi_login_at: new Date().toISOString(),
    });
    f.fleet.evaluate();
    t.equal(await stateOf(), "iscsi_logged_in");
    f.store.sessions.update(s.id, { io_seen_at: new Date().toISOString() });
    f.fleet.evaluate();
    t.equal(await stateOf(), "booted");
    t.equal((await f.http("GET", "/api/alerts?active=true", op.token)).json.length, 0);
    t.equal((await f.http("GET", "/api/alerts?active=false", op.token)).json.length, 1);

    // A target error: critical, resolved when the target is repaired.
    f.store.targets.update(target.id, { status: "error", status_reason: "tgtd not running" });
    f.fleet.evaluate();
    const crit = await f.http("GET", "/api/alerts?severity=critical&active=true", op.token);
    t.equal(crit.json.length, 1);
    t.match(crit.json[0], { cause: "target_error", machine_id: pc.id });
    t.match(crit.json[0].message, /tgtd not running/);
    t.equal(await stateOf(), "error");
    f.store.targets.update(target.id, { status: "active", status_reason: null });
    f.fleet.evaluate();
    t.equal(
      (await f.http("GET", "/api/alerts?severity=critical&active=true", op.token)).json.length,
      0,
    );

    // Logged out: off, machine_offline, session_stopped.
    f.store.sessions.update(s.id, { iscsi_logout_at: new Date().toISOString() });
    f.store.sessions.end(s.id, "stopped");
    f.fleet.evaluate();
    t.equal(await stateOf(), "off");

    const order = f.events
      .filter((e) => e.type !== "system_alert")
      .map((e) => (e.type === "machine_state" ? `state:${e.payload.state}` : e.type));
    t.same(
      order,
      [
        "session_started",
        "state:pxe",
        "state:ipxe",
        "state:script_served",
        "state:stalled",
        "state:iscsi_logged_in",
        "machine_online",
        "state:booted",
        "state:error",
        "machine_offline",
        "state:booted",
        "machine_online",
        "session_stopped",
        "state:off",
        "machine_offline",
      ],
      "events in the order the boot happened",
    );
  },
);

t.test("a stall alert left by an earlier process is resolved once the boot moves on", async (t) => {
  const f = await fleetApi(t);
  const pc = f.store.machines.create({ name: "st-pc", mac_address: "52:54:00:10:00:0a" });
  const calm = f.store.machines.create({ name: "st-calm", mac_address: "52:54:00:10:00:0b" });
  f.store.sessions.stampPhase(pc.id, "script_served_at");
  // The monitor of the process before this one raised it (the store is all that is left).
  f.store.alerts.raise({
    cause: "stall",
    severity: "warning",
    machine_id: pc.id,
    message: "st-pc stalled in phase script_served",
  });
  f.fleet.evaluate(); // the first pass only learns where things stand
  t.equal(f.store.alerts.active("stall", pc.id)?.machine_id, pc.id, "kept until the boot moves");
  // A new boot of that machine, and a first boot of another: the stall is over, no new one.
  f.store.sessions.update(f.store.sessions.current(pc.id)!.id, { status: "stopped" });
  f.store.sessions.stampPhase(pc.id, "dhcp_offer_at");
  f.store.sessions.stampPhase(calm.id, "dhcp_offer_at");
  f.fleet.evaluateMachines([pc.id, calm.id]);
  t.equal(f.store.alerts.active("stall", pc.id), undefined, "resolved");
  t.equal(f.store.alerts.active("stall", calm.id), undefined);
  t.equal(f.store.alerts.machinesWithActive("stall").size, 0);
});

t.test("a failed job raises an alert; overlay usage warns at 80% and 95%", async (t) => {
  const f = await fleetApi(t);
  const op = await f.user("ov-op", "operator");
  f.jobs.register("doomed", async () => {
    throw new Error("disk on fire");
  });
  const job = f.jobs.submit("doomed");
  await f.jobs.wait(job.id);
  const failed = await f.http("GET", "/api/alerts?active=true", op.token);
  t.equal(failed.json.length, 1);
  t.match(failed.json[0], { cause: "job_failed:doomed", machine_id: null });
  t.match(failed.json[0].message, /disk on fire/);

  const image = f.store.images.create({
    name: "G",
    filename: "g.raw",
    status: "ready",
    virtual_size_bytes: 1000,
  });
  const pc = f.store.machines.create({ name: "ov-pc", mac_address: "52:54:00:10:00:09" });
  const target = f.store.targets.create({
    name: "ov-target",
    iqn: "iqn.2024-01.io.bootfleet:ov-pc",
    portal_ip: "10.99.0.1",
    machine_id: pc.id,
    system_image_id: image.id,
    initiator_iqn: "iqn.2024-01.io.bootfleet.client:ov-pc",
    chap_username: "u9",
    chap_password: "p9",
  });
  const causes = async () =>
    (await f.http("GET", `/api/alerts?active=true&machine_id=${pc.id}`, op.token)).json.map(
      (a: { cause: string; severity: string }) => `${a.cause}/${a.severity}`,
    );
  f.store.targets.update(target.id, { overlay_allocated_bytes: 850 });
  await f.fleet.tick();
  t.same(await causes(), ["overlay_usage_80/warning"]);
  f.store.targets.update(target.id, { overlay_allocated_bytes: 960 });
  await f.fleet.tick(); // resources are read every 30th tick: force the next
  for (let i = 0; i < 30; i++) await f.fleet.tick();
  t.same(await causes(), ["overlay_usage_95/critical"], "80% resolved, 95% raised");
  f.store.targets.update(target.id, { overlay_allocated_bytes: 10 });
  for (let i = 0; i < 30; i++) await f.fleet.tick();
  t.same(await causes(), [], "reset: both resolved");
});
