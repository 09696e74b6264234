import t from "tap";
import { fleetApi } from "./fleet-helpers.js";

t.test("locations: CRUD, machines in a room, filters, delete refused while in use", async (t) => {
  const f = await fleetApi(t);
  const op = await f.user("lo-op", "operator");
  const viewer = await f.user("lo-viewer", "viewer");
  const created = await f.http("POST", "/api/locations", op.token, {
    name: "Room 101",
    description: "first floor",
  });
  t.equal(created.status, 201);
  t.match(created.json, { name: "Room 101", description: "first floor", machine_count: 0 });
  const room = created.json.id as number;
  t.equal((await f.http("POST", "/api/locations", op.token, { name: "room 101" })).status, 409);
  t.equal((await f.http("POST", "/api/locations", viewer.token, { name: "Lab" })).status, 403);
  const bad = await f.http("POST", "/api/locations", op.token, { name: "" });
  t.equal(bad.status, 422);
  t.equal(bad.json.field, "name");
  t.equal((await f.http("POST", "/api/locations", op.token, { name: "x", floor: 1 })).status, 422);
  const lab = (await f.http("POST", "/api/locations", op.token, { name: "Lab" })).json.id as number;

  const mk = async (name: string, mac: string, location_id?: number) =>
    f.http("POST", "/api/machines", op.token, { name, mac_address: mac, location_id });
  const a = await mk("r-pc-1", "52:54:00:20:00:01", room);
  t.equal(a.status, 201);
  t.equal(a.json.location_id, room);
  t.equal(a.json.state, "unknown");
  await mk("r-pc-2", "52:54:00:20:00:02", room);
  await mk("r-pc-3", "52:54:00:20:00:03");
  const nowhere = await mk("r-pc-4", "52:54:00:20:00:04", 999);
  t.equal(nowhere.status, 422);
  t.equal(nowhere.json.field, "location_id");

  const inRoom = await f.http("GET", `/api/machines?location_id=${room}`, viewer.token);
  t.same(
    inRoom.json.map((m: { name: string }) => m.name),
    ["r-pc-1", "r-pc-2"],
  );
  const inNone = await f.http("GET", "/api/machines?location_id=none", viewer.token);
  t.same(
    inNone.json.map((m: { name: string }) => m.name),
    ["r-pc-3"],
  );
  t.equal((await f.http("GET", "/api/machines?location_id=abc", viewer.token)).status, 422);
  const listed = await f.http("GET", "/api/locations?sort=name", viewer.token);
  t.same(
    listed.json.map((l: { name: string; machine_count: number }) => [l.name, l.machine_count]),
    [
      ["Lab", 0],
      ["Room 101", 2],
    ],
  );
  t.equal(listed.headers.get("x-total-count"), "2");

  const renamed = await f.http("PUT", `/api/locations/${room}`, op.token, { name: "Room 102" });
  t.equal(renamed.status, 200);
  t.equal(renamed.json.name, "Room 102");
  t.equal((await f.http("PUT", `/api/locations/${room}`, op.token, { name: "LAB" })).status, 409);
  t.equal((await f.http("GET", "/api/locations/999", viewer.token)).status, 404);

  const refused = await f.http("DELETE", `/api/locations/${room}`, op.token);
  t.equal(refused.status, 409, "a room with machines is not deleted");
  t.equal(refused.json.machine_count, 2);
  t.match(refused.json.detail, /still has 2 machine/);
  t.equal(f.store.locations.machineIds(room).length, 2, "nothing moved");
  for (const id of f.store.locations.machineIds(room)) {
    t.equal(
      (await f.http("PUT", `/api/machines/${id}`, op.token, { location_id: lab })).status,
      200,
    );
  }
  t.equal((await f.http("DELETE", `/api/locations/${room}`, op.token)).status, 200);
  t.equal((await f.http("GET", `/api/locations/${room}`, viewer.token)).status, 404);
});

t.test("bulk actions: one job, per-machine results, by ids or by room", async (t) => {
  const f = await fleetApi(t);
  const op = await f.user("bk-op", "operator");
  const viewer = await f.user("bk-viewer", "viewer");
  const room = f.store.locations.create({ name: "Bulk room" });
  const wol = f.store.machines.create({
    name: "bk-wol",
    mac_address: "52:54:00:30:00:01",
    location_id: room.id,
  });
  const bmc = f.store.machines.create({
    name: "bk-bmc",
    mac_address: "52:54:00:30:00:02",
    location_id: room.id,
    bmc_address: "10.9.9.9",
    bmc_username: "ipmi",
    bmc_password: "Bmc-Secret-2",
  });
  const runJob = async (body: unknown) => {
    const r = await f.http("POST", "/api/machines/bulk", op.token, body);
    t.equal(r.status, 202, `bulk ${JSON.stringify(body)} accepted`);
    const job = await f.jobs.wait(r.json.job_id);
    return { r, job, logs: f.store.jobs.logs(job.id).map((l) => l.message) };
  };

  const on = await runJob({ action: "power_on", location_id: room.id });
  t.same(on.r.json.machine_ids, [wol.id, bmc.id]);
  t.equal(on.job.status, "succeeded");
  t.same(f.woken, ["52:54:00:30:00:01"], "Wake-on-LAN for the machine without a BMC");
  t.ok(
    f.ipmiCalls.some((c) => c.includes("on")),
    "ipmitool for the one with a BMC",
  );
  t.notMatch(JSON.stringify(f.ipmiCalls), /Bmc-Secret-2/, "no BMC password on a command line");

  const off = await runJob({ action: "power_off", machine_ids: [wol.id, bmc.id] });
  t.equal(off.job.status, "succeeded", "one machine worked: the job is not failed");
  const result = JSON.parse(off.job.result!);
  t.match(result, { action: "power_off", total: 2, failed: 1 });
  t.match(result.results[0], { machine_id: wol.id, ok: false, message: /needs a BMC/ });
  t.match(result.results[1], { machine_id: bmc.id, ok: true });
  t.ok(
    off.logs.some((l) => /bk-wol: .*needs a BMC/.test(l)),
    "each machine's outcome in the job's log",
  );

  const only = await runJob({ action: "power_off", machine_ids: [wol.id] });
  t.equal(only.job.status, "failed", "every machine failed: the job failed");

  const boot = await runJob({
    action: "set_boot_action",
    location_id: room.id,
    boot_action: "local",
  });
  t.equal(boot.job.status, "succeeded");
  t.equal(f.store.machines.get(wol.id)!.boot_action, "local");
  t.equal(f.store.machines.get(bmc.id)!.boot_action, "local");

  const image = f.store.images.create({ name: "New", filename: "new.raw", status: "ready" });
  const assign = await runJob({
    action: "assign_image",
    machine_ids: [wol.id],
    image_id: image.id,
  });
  t.equal(assign.job.status, "succeeded");
  t.equal(f.store.machines.get(wol.id)!.boot_image_id, image.id);

  // A boot menu's targets (work and games) are not all made one image.
  const old = f.store.images.create({ name: "Old", filename: "old.raw", status: "ready" });
  for (const n of [1, 2]) {
    f.store.targets.create({
      name: `bk-bmc-t${n}`,
      iqn: `iqn.2024-01.io.bootfleet:bk-bmc:t${n}`,
      portal_ip: "10.99.0.1",
      machine_id: bmc.id,
      system_image_id: old.id,
      initiator_iqn: "iqn.2024-01.io.bootfleet:client-bk-bmc",
      chap_username: `bk-bmc_t${n}`,
      chap_password: "secret-secret-1",
    });
  }
  const menu = await runJob({ action: "assign_image", machine_ids: [bmc.id], image_id: image.id });
  t.equal(menu.job.status, "failed");
  t.ok(
    menu.logs.some((l) => /bk-bmc: .*2 targets \(a boot menu\)/.test(l)),
    "the reason in its log",
  );
  t.same(
    f.store.targets.forMachine(bmc.id).map((x) => x.system_image_id),
    [old.id, old.id],
    "its targets keep their images",
  );

  const reset = await runJob({ action: "reset_overlays", machine_ids: [bmc.id] });
  t.equal(reset.job.status, "succeeded");
  t.same(f.resets, [bmc.id]);

  const both = await f.http("POST", "/api/machines/bulk", op.token, {
    action: "power_on",
    machine_ids: [wol.id],
    location_id: room.id,
  });
  t.equal(both.status, 422, "ids or a room, not both");
  const neither = await f.http("POST", "/api/machines/bulk", op.token, { action: "power_on" });
  t.equal(neither.status, 422);
  const noImage = await f.http("POST", "/api/machines/bulk", op.token, {
    action: "assign_image",
    machine_ids: [wol.id],
  });
  t.equal(noImage.status, 422);
  t.match(noImage.json.detail, /image_id/);
  const ghost = await f.http("POST", "/api/machines/bulk", op.token, {
    action: "power_on",
    machine_ids: [wol.id, 4242],
  });
  t.equal(ghost.status, 422);
  t.match(ghost.json.detail, /4242/);
  const empty = f.store.locations.create({ name: "Empty" });
  t.equal(
    (
      await f.http("POST", "/api/machines/bulk", op.token, {
        action: "power_on",
        location_id: empty.id,
      })
    ).status,
    409,
  );
  t.equal(
    (
      await f.http("POST", "/api/machines/bulk", viewer.token, {
        action: "power_on",
        machine_ids: [wol.id],
      })
    ).status,
    403,
  );
});
