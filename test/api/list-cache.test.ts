import { join } from "node:path";
import t, { type Test } from "tap";
import { createApi } from "../../src/api/app.js";
import { ListCache } from "../../src/api/list-cache.js";
import { FleetMonitor } from "../../src/fleet/monitor.js";
import { Store } from "../../src/store/index.js";
import {
  addUser,
  call,
  HIGH_LIMITS,
  makeApi,
  memoryLogger,
  type TestApi,
  tokenFor,
} from "./helpers.js";

// The machine list is built once and its bytes sent again while nothing it was built from
// changed (src/api/list-cache.ts). Every answer here is checked against a rebuild: a new
// app on the same store and clock, whose cache is empty.

const counters = new Map<TestApi, { builds: number }>();

/** Counts how often the app under test reads the list's rows from the store (a build). */
function countBuilds(api: TestApi) {
  const repo = api.store.machines;
  const listRows = repo.listRows.bind(repo);
  const n = { builds: 0 };
  counters.set(api, n);
  repo.listRows = (...args) => {
    n.builds++;
    return listRows(...args);
  };
  return n;
}

/** The same request to a new app on the same store, clock and services: a rebuild. */
async function rebuilt(api: TestApi, path: string, token: string, services = {}) {
  const { app } = createApi({
    log: memoryLogger().log,
    version: "test",
    state: () => "ready",
    store: api.store,
    signingKey: api.key,
    clock: () => api.now.ms,
    rateLimits: HIGH_LIMITS,
    services,
  });
  const n = counters.get(api);
  const before = n?.builds ?? 0;
  const r = await call({ ...api, app }, "GET", path, { token });
  // The rebuild reads the same repository: not a build of the app under test.
  if (n) n.builds = before;
  return r;
}

async function same(
  t: Test,
  api: TestApi,
  path: string,
  token: string,
  what: string,
  services = {},
) {
  const got = await call(api, "GET", path, { token });
  t.equal(got.status, 200, `${what}: 200`);
  const fresh = await rebuilt(api, path, token, services);
  t.equal(got.text, fresh.text, `${what}: the bytes a rebuild gives`);
  t.equal(got.headers.get("x-total-count"), fresh.headers.get("x-total-count"), `${what}: total`);
  t.equal(got.headers.get("x-page-count"), fresh.headers.get("x-page-count"), `${what}: pages`);
  t.equal(got.headers.get("content-type"), "application/json", `${what}: JSON`);
  return got;
}

t.test("built once while nothing changes; every kind of change rebuilds it", async (t) => {
  const api = makeApi(t);
  const admin = await tokenFor(api, await addUser(api, "root", "admin"));
  const viewer = await tokenFor(api, await addUser(api, "vic", "viewer"));
  const ids: number[] = [];
  for (let i = 1; i <= 3; i++) {
    const r = await call(api, "POST", "/api/machines", {
      token: admin,
      body: { name: `pc-${i}`, mac_address: `52:54:00:00:01:0${i}` },
    });
    ids.push(r.json.id);
  }
  const n = countBuilds(api);
  const first = await same(t, api, "/api/machines", admin, "first");
  t.equal(first.json.length, 3);
  t.equal(n.builds, 1, "built once");
  const again = await call(api, "GET", "/api/machines", { token: admin });
  const buster = await call(api, "GET", "/api/machines?_=1712", { token: admin });
  const asViewer = await call(api, "GET", "/api/machines", { token: viewer });
  t.equal(n.builds, 1, "the same answer again, with a cache buster, and to a viewer: no build");
  for (const r of [again, buster, asViewer]) t.equal(r.text, first.text);
  await call(api, "GET", "/api/machines?limit=2", { token: admin });
  t.equal(n.builds, 2, "another page is another entry");

  const put = await call(api, "PUT", `/api/machines/${ids[0]}`, {
    token: admin,
    body: { name: "renamed" },
  });
  t.equal(put.status, 200);
  const afterPut = await same(t, api, "/api/machines", admin, "after an update");
  t.equal(afterPut.json[0].name, "renamed");

  await call(api, "POST", "/api/machines", {
    token: admin,
    body: { name: "pc-4", mac_address: "52:54:00:00:01:04" },
  });
  t.equal((await same(t, api, "/api/machines", admin, "after a create")).json.length, 4);
  t.equal((await call(api, "DELETE", `/api/machines/${ids[1]}`, { token: admin })).status, 200);
  const afterDelete = await same(t, api, "/api/machines", admin, "after a delete");
  t.notOk(
    afterDelete.json.some((m: { id: number }) => m.id === ids[1]),
    "the deleted one is gone",
  );

  // Writes that do not go through the API: the store itself, another connection.
  api.store.machines.update(ids[2]!, { room: "lab-9" });
  t.equal(
    (await same(t, api, "/api/machines", admin, "after a store write")).json.find(
      (m: { id: number }) => m.id === ids[2],
    ).room,
    "lab-9",
  );
  const other = Store.open({ path: join(api.dir, "bootfleet.db"), busyTimeoutMs: 2000 });
  other.machines.update(ids[2]!, { location: "annex" });
  other.close();
  // Another process's commit counts from the next turn of the event loop (Store.generation).
  await new Promise((r) => setImmediate(r));
  t.equal(
    (await same(t, api, "/api/machines", admin, "after another process's write")).json.find(
      (m: { id: number }) => m.id === ids[2],
    ).location,
    "annex",
  );

  // A boot stamp changes the machine's live state.
  const s = api.store.sessions.stampPhase(ids[2]!, "dhcp_offer_at");
  const booting = await same(t, api, "/api/machines", admin, "after a boot stamp");
  const row = () => booting.json.find((m: { id: number }) => m.id === ids[2]);
  t.equal(row().state, "pxe");

  // Time alone: the same rows stall once the bound (120 s without the fleet monitor) passed.
  const stampedAt = Date.parse(s.dhcp_offer_at!);
  api.now.ms = stampedAt + 120_000;
  const before = n.builds;
  const atBound = await same(t, api, "/api/machines", admin, "at the stall bound");
  t.equal(
    atBound.json.find((m: { id: number }) => m.id === ids[2]).state,
    "pxe",
    "not stalled yet",
  );
  t.equal(n.builds, before, "still the kept answer at the bound");
  api.now.ms = stampedAt + 120_001;
  const stalled = await same(t, api, "/api/machines", admin, "past the stall bound");
  const st = stalled.json.find((m: { id: number }) => m.id === ids[2]);
  t.equal(st.state, "stalled", "stalled without any write");
  t.match(st.state_detail.reason, /120 s ago/);
  t.equal(n.builds, before + 1, "rebuilt because time passed");
  api.now.ms = stampedAt + 120_400;
  await same(t, api, "/api/machines", admin, "0.4 s later");
  t.equal(n.builds, before + 1, "the reason still reads 120 s: kept");
  api.now.ms = stampedAt + 120_500;
  const later = await same(t, api, "/api/machines", admin, "at 120.5 s");
  t.match(later.json.find((m: { id: number }) => m.id === ids[2]).state_detail.reason, /121 s ago/);
  t.equal(n.builds, before + 2, "rebuilt when the seconds went up");
});

t.test("clients get their own list; the roles that see the fleet share one", async (t) => {
  const api = makeApi(t);
  const admin = await tokenFor(api, await addUser(api, "root", "admin"));
  const viewer = await tokenFor(api, await addUser(api, "vic", "viewer"));
  const alice = await addUser(api, "alice", "client");
  const bob = await addUser(api, "bob", "client");
  const aliceToken = await tokenFor(api, alice);
  const bobToken = await tokenFor(api, bob);
  const owners = [alice.id, alice.id, bob.id, null];
  const ids: number[] = [];
  for (const [i, owner] of owners.entries()) {
    const r = await call(api, "POST", "/api/machines", {
      token: admin,
      body: { name: `pc-${i}`, mac_address: `52:54:00:00:02:0${i}`, owner_user_id: owner },
    });
    ids.push(r.json.id);
  }
  const names = (r: { json: { name: string }[] }) => r.json.map((m) => m.name);
  t.same(names(await same(t, api, "/api/machines", aliceToken, "alice")), ["pc-0", "pc-1"]);
  t.same(names(await same(t, api, "/api/machines", bobToken, "bob")), ["pc-2"]);
  t.equal((await same(t, api, "/api/machines", admin, "admin")).json.length, 4);
  t.equal((await same(t, api, "/api/machines", viewer, "viewer")).json.length, 4);
  t.same(names(await call(api, "GET", "/api/machines", { token: aliceToken })), ["pc-0", "pc-1"]);
  t.same(names(await call(api, "GET", "/api/machines", { token: bobToken })), ["pc-2"]);

  await call(api, "PUT", `/api/machines/${ids[1]}`, {
    token: admin,
    body: { owner_user_id: bob.id },
  });
  t.same(names(await same(t, api, "/api/machines", aliceToken, "alice after")), ["pc-0"]);
  t.same(names(await same(t, api, "/api/machines", bobToken, "bob after")), ["pc-1", "pc-2"]);
});

t.test("with the fleet monitor: its clock and stall bound decide", async (t) => {
  const now = { ms: Date.now() };
  const holder: { fleet?: FleetMonitor } = {};
  const api = makeApi(t, {
    services: {
      get fleet() {
        return holder.fleet;
      },
    },
  });
  const fleet = new FleetMonitor({
    store: api.store,
    log: memoryLogger().log,
    stallAfterMs: 30_000,
    clock: () => now.ms,
    io: async (iqns) => new Map(iqns.map((q) => [q, { readBytes: 0, writeBytes: 0, commands: 0 }])),
  });
  holder.fleet = fleet;
  t.teardown(() => fleet.stop());
  const admin = await tokenFor(api, await addUser(api, "root", "admin"));
  const m = (
    await call(api, "POST", "/api/machines", {
      token: admin,
      body: { name: "pc-1", mac_address: "52:54:00:00:03:01" },
    })
  ).json;
  const s = api.store.sessions.stampPhase(m.id, "script_served_at");
  const stampedAt = Date.parse(s.script_served_at!);
  now.ms = stampedAt + 30_000;
  const services = { fleet };
  const a = await same(t, api, "/api/machines", admin, "at the bound", services);
  t.equal(a.json[0].state, "script_served");
  now.ms = stampedAt + 30_001;
  const b = await same(t, api, "/api/machines", admin, "past the bound", services);
  t.equal(b.json[0].state, "stalled");
  t.match(b.json[0].state_detail.reason, /30 s ago/);
});

t.test("ListCache: generation, the entry's own check, and its bound", async (t) => {
  const cache = new ListCache(3);
  const page = (n: number) => ({ body: Buffer.from(`[${n}]`), total: n });
  let holds = true;
  cache.set("a", "1.1", page(1), () => holds);
  t.same(cache.get("a", "1.1"), page(1), "same generation, still holds");
  t.equal(cache.get("a", "2.1"), undefined, "another generation: gone");
  t.equal(cache.get("a", "1.1"), undefined, "and dropped");
  cache.set("a", "1.1", page(1), () => holds);
  holds = false;
  t.equal(cache.get("a", "1.1"), undefined, "no longer holds: gone");
  for (const k of ["k1", "k2", "k3", "k4"]) cache.set(k, "1.1", page(1), () => true);
  t.equal(cache.size, 3, "bounded");
  t.equal(cache.get("k1", "1.1"), undefined, "the oldest went first");
  t.ok(cache.get("k4", "1.1"), "the newest is there");
});
