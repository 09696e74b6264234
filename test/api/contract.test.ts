import { readFileSync } from "node:fs";
import t from "tap";
import { DEFAULT_RATE_LIMITS } from "../../src/api/route.js";
import { IpmiPower } from "../../src/power/ipmi.js";
import { PowerService } from "../../src/power/service.js";
import { addUser, call, makeApi, seedJsonAfter, tokenFor } from "./helpers.js";

const seed = readFileSync(new URL("./fixtures/ggnet-api.md", import.meta.url), "utf8");
const keysOf = (o: unknown) => Object.keys(o as object);

t.test("machines, targets, sessions: the seed's requests and fields", async (t) => {
  const woken: string[] = [];
  // POST /sessions/start wakes the machine: Wake-on-LAN recorded, no BMC in the seed.
  const power = new PowerService({
    ipmi: new IpmiPower({ run: async () => ({ stdout: "", stderr: "" }) }),
    wake: async (mac) => {
      woken.push(mac);
    },
  });
  const api = makeApi(t, { services: { power } });
  const token = await tokenFor(api, await addUser(api, "admin", "admin"));
  // images come from the images routes (another module); the store stands in here
  const win = api.store.images.create({
    name: "Windows 11 Pro",
    filename: "win11pro.vhdx",
    status: "ready",
  });
  const games = api.store.images.create({
    name: "Games Disk",
    filename: "games.raw",
    status: "ready",
    image_type: "game",
  });

  const [listed] = seedJsonAfter(seed, "#### GET /machines") as [Record<string, unknown>[]];
  const [createM] = seedJsonAfter(seed, "#### POST /machines") as [Record<string, unknown>];
  const m1 = await call(api, "POST", "/api/machines", {
    token,
    body: {
      ...listed[0],
      id: undefined,
      is_online: undefined,
      created_at: undefined,
      last_seen: undefined,
      last_boot: undefined,
      boot_count: undefined,
    },
  });
  t.equal(m1.status, 201, "the listed machine of the seed can be created");
  const m2 = await call(api, "POST", "/api/machines", { token, body: createM });
  t.equal(m2.status, 201, "POST /machines with the seed's body");
  t.equal(m2.json.id, 2, "the seed's target example names machine 2");
  const list = await call(
    api,
    "GET",
    "/api/machines?status=active&location=Computer%20Lab&room=Room%20101",
    { token },
  );
  t.equal(list.status, 200);
  t.equal(list.json.length, 2);
  for (const k of keysOf(listed[0])) t.ok(k in list.json[0], `machine field ${k}`);
  t.equal(list.json[0].secure_boot_enabled, true);
  t.equal(list.headers.get("x-total-count"), "2");
  t.equal(list.headers.get("x-page-count"), "1");

  const [createT] = seedJsonAfter(seed, "#### POST /targets") as [Record<string, unknown>];
  t.equal(createT.system_image_id, win.id);
  t.equal(createT.extra_disk_image_id, games.id);
  const tg = await call(api, "POST", "/api/targets", { token, body: createT });
  t.equal(tg.status, 201, "POST /targets with the seed's body");
  t.same(api.targetChanges, [2], "the reconciler hook was told");
  const [targets] = seedJsonAfter(seed, "#### GET /targets") as [Record<string, unknown>[]];
  const tl = await call(api, "GET", "/api/targets?machine_id=2&status=pending", { token });
  t.equal(tl.json.length, 1);
  for (const k of keysOf(targets[0])) t.ok(k in tl.json[0], `target field ${k}`);
  t.equal(tl.json[0].machine_name, "LAB-PC-02");
  t.equal(tl.json[0].system_image_name, "Windows 11 Pro");
  t.equal(tl.json[0].extra_disk_image_name, "Games Disk");
  t.notMatch(tl.text, /chap/i, "CHAP credentials never listed");
  const stored = api.store.targets.get(tg.json.id)!;
  t.match(stored.chap_password, /^[A-Za-z0-9]{16}$/, "CHAP secret generated server-side");
  t.notMatch(
    (await call(api, "GET", `/api/targets/${tg.json.id}`, { token })).text,
    stored.chap_password,
  );

  const [startS] = seedJsonAfter(seed, "#### POST /sessions/start") as [Record<string, unknown>];
  const st = await call(api, "POST", "/api/sessions/start", {
    token,
    body: { ...startS, target_id: tg.json.id },
  });
  t.equal(st.status, 201, "POST /sessions/start with the seed's body");
  t.same(woken, ["00:11:22:33:44:56"], "the machine was woken");
  const [sessions] = seedJsonAfter(seed, "#### GET /sessions") as [Record<string, unknown>[]];
  for (const k of keysOf(sessions[0])) t.ok(k in st.json, `session field ${k}`);
  for (const k of keysOf((sessions[0] as { iscsi_info: object }).iscsi_info))
    t.ok(k in st.json.iscsi_info, `iscsi_info.${k}`);
  t.equal(st.json.iscsi_info.portal, "10.99.0.1:3260");
  t.same(st.json.iscsi_info.lun_mapping["1"], {
    image_id: games.id,
    mountpoint: "D:",
    type: "game",
  });
  const again = await call(api, "POST", "/api/sessions/start", {
    token,
    body: { ...startS, target_id: tg.json.id },
  });
  t.equal(again.status, 409, "one running session per machine");
  const sid = st.json.session_id as string;
  t.equal(
    (await call(api, "GET", `/api/sessions/${sid}/status`, { token })).json.status,
    "starting",
  );
  t.equal(
    (await call(api, "GET", `/api/sessions?machine_id=2&status=starting`, { token })).json.length,
    1,
  );
  const stop = await call(api, "POST", `/api/sessions/${sid}/stop`, { token });
  t.equal(stop.status, 200);
  t.equal(stop.json.status, "stopped");
  t.ok(stop.json.ended_at);
  t.equal((await call(api, "POST", `/api/sessions/${sid}/stop`, { token })).status, 409);
  t.equal((await call(api, "GET", "/api/sessions/session_nothere/status", { token })).status, 404);

  t.equal((await call(api, "DELETE", `/api/targets/${tg.json.id}`, { token })).status, 200);
  t.same(api.targetChanges, [2, 2]);
  t.equal((await call(api, "GET", `/api/targets/${tg.json.id}`, { token })).status, 404);
});

t.test("health/detailed and errors have the seed's shape", async (t) => {
  const api = makeApi(t);
  const token = await tokenFor(api, await addUser(api, "viewer", "viewer"));
  type Detailed = { checks: { system: { memory: object } } & Record<string, object> };
  const [expected] = seedJsonAfter(seed, "#### GET /health/detailed") as [Detailed];
  const r = await call(api, "GET", "/api/health/detailed", { token });
  t.equal(r.status, 200);
  for (const k of keysOf(expected)) t.ok(k in r.json, k);
  for (const k of keysOf(expected.checks)) t.ok(k in r.json.checks, `checks.${k}`);
  for (const k of keysOf(expected.checks.system)) t.ok(k in r.json.checks.system, `system.${k}`);
  for (const k of keysOf(expected.checks.system.memory))
    t.ok(k in r.json.checks.system.memory, `memory.${k}`);
  t.same(r.json.checks.directories[api.dir], { exists: true, writable: true, status: "healthy" });
  t.equal(r.json.checks.database.status, "healthy");

  const errorExample = seed.match(
    /All endpoints return consistent error responses:\s*```json\n([\s\S]*?)```/,
  )![1]!;
  const nf = await call(api, "GET", "/api/machines/424242", { token });
  t.equal(nf.status, 404);
  for (const k of keysOf(JSON.parse(errorExample))) t.ok(k in nf.json, `error body ${k}`);
  t.equal(nf.json.error, "not_found");
  t.equal(nf.json.request_id, nf.headers.get("x-request-id"));
});

t.test("rate limits: the seed's defaults and headers, per client address", async (t) => {
  const api = makeApi(t, { rateLimits: DEFAULT_RATE_LIMITS });
  const from = (ip: string) => ({ incoming: { socket: { remoteAddress: ip } } });
  const statuses: number[] = [];
  let last: Awaited<ReturnType<typeof call>> | undefined;
  for (let i = 0; i < 6; i++) {
    last = await call(api, "POST", "/api/auth/login", {
      body: { username: "x", password: "y" },
      env: from("10.1.1.1"),
    });
    statuses.push(last.status);
  }
  t.same(statuses, [401, 401, 401, 401, 401, 429], "auth: 5 per 5 minutes");
  t.equal(last!.json.error, "rate_limit_exceeded");
  t.equal(last!.headers.get("x-ratelimit-limit"), "5");
  t.equal(last!.headers.get("x-ratelimit-remaining"), "0");
  t.equal(last!.headers.get("x-ratelimit-window"), "300");
  t.ok(Number(last!.headers.get("x-ratelimit-reset")) > api.now.ms / 1000);
  const other = await call(api, "POST", "/api/auth/login", {
    body: { username: "x", password: "y" },
    env: from("10.1.1.2"),
  });
  t.equal(other.status, 401, "another address has its own budget");

  let general: Awaited<ReturnType<typeof call>> | undefined;
  for (let i = 0; i < 101; i++)
    general = await call(api, "GET", "/api/machines", { env: from("10.1.1.3") });
  t.equal(general!.status, 429, "general: the 101st request in a minute");
  t.equal(general!.headers.get("x-ratelimit-limit"), "100");
  t.equal(general!.headers.get("x-ratelimit-window"), "60");
  api.now.ms += 60_000;
  t.equal(
    (await call(api, "GET", "/api/machines", { env: from("10.1.1.3") })).status,
    401,
    "a new window",
  );
  t.same(DEFAULT_RATE_LIMITS.upload, { limit: 3, windowSeconds: 60 }, "upload: 3 per minute");
});

t.test("OpenAPI and docs: readable without a token, generated from the registry", async (t) => {
  const api = makeApi(t);
  const doc = await call(api, "GET", "/api/openapi.json");
  t.equal(doc.status, 200);
  t.equal(doc.json.openapi, "3.1.0");
  for (const r of api.routes.filter((r) => !r.hidden)) {
    const p = `/api${r.path.replace(/:([A-Za-z_]+)/g, "{$1}")}`;
    t.ok(doc.json.paths[p]?.[r.method.toLowerCase()], `${r.method} ${p} documented`);
  }
  t.ok(
    doc.json.paths["/api/machines"].post.requestBody.content["application/json"].schema.properties
      .mac_address,
  );
  const html = await call(api, "GET", "/api/docs");
  t.equal(html.status, 200);
  t.match(html.headers.get("content-type"), /text\/html/);
  t.match(html.headers.get("content-security-policy"), /script-src 'self';/);
  t.notMatch(html.text, /<script>|<style|\sstyle=|\son[a-z]+=/i, "no inline script or style");
  t.notMatch(html.text, /https?:\/\/(?!localhost)[a-z]/i, "no CDN or other outside URL");
  for (const src of html.text.match(/(?<=(src|href)=")\/api\/docs\/[^"]+/g) ?? []) {
    const file = await call(api, "GET", src);
    t.equal(file.status, 200, `${src} is served`);
  }
  const init = await call(api, "GET", "/api/docs/init.js");
  t.match(init.headers.get("content-type"), /text\/javascript/);
  t.match(init.text, '"/api/openapi.json"', "the initializer reads this API's document");
  t.match(init.text, "validatorUrl: null", "and never asks an outside validator");
  t.equal((await call(api, "GET", "/api/docs/index.html")).status, 422, "only the listed files");
});

t.test("rate limits: a class whose limit is 0 is not counted; the others still are", async (t) => {
  const api = makeApi(t, {
    rateLimits: { ...DEFAULT_RATE_LIMITS, general: { limit: 0, windowSeconds: 60 } },
  });
  const env = { incoming: { socket: { remoteAddress: "10.1.2.3" } } };
  const general: number[] = [];
  for (let i = 0; i < 150; i++)
    general.push((await call(api, "GET", "/api/machines", { env })).status);
  t.ok(
    general.every((s) => s === 401),
    "150 general requests in a minute: none refused",
  );
  const auth: number[] = [];
  for (let i = 0; i < 6; i++)
    auth.push(
      (await call(api, "POST", "/api/auth/login", { body: { username: "x", password: "y" }, env }))
        .status,
    );
  t.equal(auth.at(-1), 429, "logins keep their own limit");
});
