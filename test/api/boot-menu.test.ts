import t from "tap";
import { addUser, call, makeApi, tokenFor } from "./helpers.js";

// Boot menus through the API: a machine may have several targets, each with its own IQN
// and CHAP user; its default target, menu time-out and local-disk entry are set on the
// machine (and the last two on its room), validated and shown.

async function setup(t: Parameters<typeof makeApi>[0]) {
  const api = makeApi(t);
  const token = await tokenFor(api, await addUser(api, "menu-op", "operator"));
  const http = (method: string, path: string, body?: unknown) =>
    call(api, method, `/api${path}`, { token, body });
  const image = (name: string) =>
    api.store.images.create({ name, filename: `${name}.raw`, status: "ready" }).id;
  const pc = await http("POST", "/machines", {
    name: "lab-pc-7",
    mac_address: "52:54:00:bf:72:07",
  });
  const other = await http("POST", "/machines", {
    name: "lab-pc-8",
    mac_address: "52:54:00:bf:72:08",
  });
  return { api, http, image, pc: pc.json.id as number, other: other.json.id as number };
}

t.test("a machine may have several targets, each with its own identity", async (t) => {
  const { api, http, image, pc } = await setup(t);
  const win = await http("POST", "/targets", { machine_id: pc, system_image_id: image("win") });
  const linux = await http("POST", "/targets", {
    machine_id: pc,
    system_image_id: image("linux"),
    description: "Debian for the course",
  });
  const games = await http("POST", "/targets", {
    machine_id: pc,
    system_image_id: image("games"),
    name: "games-disk",
  });
  t.equal(win.status, 201);
  t.equal(linux.status, 201, "a second target is no longer refused");
  t.equal(games.status, 201, "nor a third");
  t.equal(win.json.iqn, "iqn.2024-01.io.bootfleet:lab-pc-7", "the first keeps the machine's IQN");
  t.equal(linux.json.iqn, `iqn.2024-01.io.bootfleet:lab-pc-7:t${linux.json.id}`);
  t.equal(games.json.iqn, `iqn.2024-01.io.bootfleet:lab-pc-7:t${games.json.id}`);
  t.equal(win.json.name, "lab-pc-7-Target");
  t.equal(linux.json.name, `lab-pc-7-Target-${linux.json.id}`, "a default name of its own");
  t.equal(games.json.name, "games-disk", "or the name given");
  const rows = [win, linux, games].map((r) => api.store.targets.get(r.json.id)!);
  t.equal(new Set(rows.map((r) => r.chap_username)).size, 3, "a CHAP user each (tgt's are global)");
  t.equal(rows[1]!.chap_username, `bf-lab-pc-7_t${linux.json.id}`);
  t.equal(new Set(rows.map((r) => r.initiator_iqn)).size, 1, "one initiator: the machine's");
  t.same(api.targetChanges, [pc, pc, pc], "the reconciler told of each");
  t.notOk(JSON.stringify([win.json, linux.json]).includes(rows[0]!.chap_password), "no secret");
  const list = await http("GET", `/targets?machine_id=${pc}`);
  t.equal(list.json.length, 3);
  const dup = await http("POST", "/targets", {
    machine_id: pc,
    system_image_id: image("dup"),
    name: "GAMES-DISK",
  });
  t.equal(dup.status, 409, "a name already taken is still a conflict");
  t.equal((await http("GET", `/targets?machine_id=${pc}`)).json.length, 3, "nothing half-made");
});

t.test("the machine's menu fields: default target, time-out, local disk", async (t) => {
  const { http, image, pc, other } = await setup(t);
  const mine = await http("POST", "/targets", { machine_id: pc, system_image_id: image("a") });
  const theirs = await http("POST", "/targets", { machine_id: other, system_image_id: image("b") });

  const fresh = await http("GET", `/machines/${pc}`);
  t.equal(fresh.json.default_target_id, null);
  t.equal(fresh.json.menu_timeout_seconds, null, "not set: its room's, else the global one");
  t.equal(fresh.json.menu_local_disk, null);

  const set = await http("PUT", `/machines/${pc}`, {
    default_target_id: mine.json.id,
    menu_timeout_seconds: 25,
    menu_local_disk: true,
  });
  t.equal(set.status, 200);
  t.equal(set.json.default_target_id, mine.json.id);
  t.equal(set.json.menu_timeout_seconds, 25);
  t.equal(set.json.menu_local_disk, true);

  const foreign = await http("PUT", `/machines/${pc}`, { default_target_id: theirs.json.id });
  t.equal(foreign.status, 422, "another machine's target");
  t.equal(foreign.json.field, "default_target_id");
  t.match(foreign.json.detail, /not a target of this machine/);
  const missing = await http("PUT", `/machines/${pc}`, { default_target_id: 999999 });
  t.equal(missing.status, 422, "no such target");
  const atCreate = await http("POST", "/machines", {
    name: "lab-pc-9",
    mac_address: "52:54:00:bf:72:09",
    default_target_id: mine.json.id,
  });
  t.equal(atCreate.status, 422, "a new machine has no target to default to");

  for (const bad of [0, 241, 1.5, -3, "10"]) {
    const r = await http("PUT", `/machines/${pc}`, { menu_timeout_seconds: bad });
    t.equal(r.status, 422, `time-out ${JSON.stringify(bad)}`);
    t.equal(r.json.field, "menu_timeout_seconds");
  }
  t.equal((await http("PUT", `/machines/${pc}`, { menu_timeout_seconds: 240 })).status, 200);
  t.equal((await http("PUT", `/machines/${pc}`, { menu_local_disk: "yes" })).status, 422);

  const cleared = await http("PUT", `/machines/${pc}`, {
    default_target_id: null,
    menu_timeout_seconds: null,
    menu_local_disk: null,
  });
  t.equal(cleared.status, 200);
  t.same(
    [
      cleared.json.default_target_id,
      cleared.json.menu_timeout_seconds,
      cleared.json.menu_local_disk,
    ],
    [null, null, null],
    "each back to inherited",
  );
  t.equal((await http("GET", `/machines/${pc}`)).json.menu_timeout_seconds, null, "and stored so");
});

t.test("deleting the default target clears the machine's default", async (t) => {
  const { http, image, pc } = await setup(t);
  const a = await http("POST", "/targets", { machine_id: pc, system_image_id: image("a") });
  const b = await http("POST", "/targets", { machine_id: pc, system_image_id: image("b") });
  await http("PUT", `/machines/${pc}`, { default_target_id: b.json.id });
  t.equal((await http("DELETE", `/targets/${b.json.id}`)).status, 200);
  t.equal((await http("GET", `/machines/${pc}`)).json.default_target_id, null);
  t.equal((await http("GET", `/targets/${a.json.id}`)).status, 200, "the other one stays");
});

t.test("a room's menu habits", async (t) => {
  const { http } = await setup(t);
  const room = await http("POST", "/locations", { name: "lab 3", menu_timeout_seconds: 5 });
  t.equal(room.status, 201);
  t.equal(room.json.menu_timeout_seconds, 5);
  t.equal(room.json.menu_local_disk, null);
  const put = await http("PUT", `/locations/${room.json.id}`, { menu_local_disk: true });
  t.equal(put.json.menu_local_disk, true);
  t.equal(put.json.menu_timeout_seconds, 5, "what the PUT leaves out stays");
  for (const bad of [0, 241, 2.5]) {
    const r = await http("PUT", `/locations/${room.json.id}`, { menu_timeout_seconds: bad });
    t.equal(r.status, 422, `room time-out ${bad}`);
    t.equal(r.json.field, "menu_timeout_seconds");
  }
  const listed = (await http("GET", "/locations")).json.find(
    (l: { id: number }) => l.id === room.json.id,
  );
  t.same([listed.menu_timeout_seconds, listed.menu_local_disk], [5, true], "shown in the list");
});
