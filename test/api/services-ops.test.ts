import { execFileSync } from "node:child_process";
import { readFileSync, statfsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { addUser, call, seedJsonAfter, tokenFor } from "./helpers.js";
import { servicesApi } from "./services-helpers.js";

const seed = readFileSync(new URL("./fixtures/ggnet-api.md", import.meta.url), "utf8");

t.test("power: Wake-on-LAN without a BMC, ipmitool with one, clients only their own", async (t) => {
  const api = servicesApi(t);
  const admin = await tokenFor(api, await addUser(api, "p-admin", "admin"));
  const viewer = await tokenFor(api, await addUser(api, "p-viewer", "viewer"));
  const alice = await addUser(api, "p-alice", "client");
  const aliceToken = await tokenFor(api, alice);
  const mk = async (body: Record<string, unknown>) =>
    (await call(api, "POST", "/api/machines", { token: admin, body })).json.id as number;
  const plain = await mk({ name: "wol-pc", mac_address: "52-54-00-AA-BB-01" });
  const bmc = await mk({
    name: "bmc-pc",
    mac_address: "52:54:00:aa:bb:02",
    bmc_address: "10.9.9.9",
    bmc_username: "ipmiadmin",
    bmc_password: "Bmc-Secret-1",
  });
  const hers = await mk({
    name: "alice-pc",
    mac_address: "52:54:00:aa:bb:03",
    owner_user_id: alice.id,
  });

  const on = await call(api, "POST", `/api/machines/${plain}/power/on`, { token: admin });
  t.equal(on.status, 200);
  t.same(api.woken, ["52:54:00:aa:bb:01"], "the magic packet went to the machine's MAC");
  t.match(on.json, { machine_id: plain, action: "on", method: "wol", state: "unknown" });
  const off = await call(api, "POST", `/api/machines/${plain}/power/off`, { token: admin });
  t.equal(off.status, 409, "off needs a BMC");
  t.match(off.json.detail, /needs a BMC/);
  const q = await call(api, "POST", `/api/machines/${plain}/power/query`, { token: admin });
  t.equal(q.json.state, "unknown");

  const cycle = await call(api, "POST", `/api/machines/${bmc}/power/cycle`, { token: admin });
  t.equal(cycle.status, 200);
  t.equal(cycle.json.method, "ipmi");
  t.same(api.ipmiCalls.at(-1)?.slice(-4), ["-E", "chassis", "power", "cycle"]);
  t.notOk(api.ipmiCalls.flat().includes("Bmc-Secret-1"), "the password is not an argument");
  const status = await call(api, "POST", `/api/machines/${bmc}/power/query`, { token: admin });
  t.equal(status.json.state, "on", "ipmitool's answer parsed");

  t.equal(
    (await call(api, "POST", `/api/machines/${plain}/power/on`, { token: viewer })).status,
    403,
    "viewers only read",
  );
  t.equal(
    (await call(api, "POST", `/api/machines/${plain}/power/on`, { token: aliceToken })).status,
    404,
    "a client cannot reach another's machine",
  );
  const own = await call(api, "POST", `/api/machines/${hers}/power/on`, { token: aliceToken });
  t.equal(own.status, 200, "a client powers its own machine");
  t.equal(api.woken.at(-1), "52:54:00:aa:bb:03");
  const rows = api.store.db
    .prepare(
      "SELECT operation, machine_id, status FROM history_events WHERE operation LIKE 'power_%' ORDER BY id",
    )
    .all();
  t.same(
    rows.map((r) => Object.values(r as object).join(":")),
    [
      `power_on:${plain}:success`,
      `power_off:${plain}:failure`,
      `power_query:${plain}:success`,
      `power_cycle:${bmc}:success`,
      `power_query:${bmc}:success`,
      "power_on::failure", // the viewer: refused before the path was read
      `power_on:${plain}:failure`,
      `power_on:${hers}:success`,
    ],
    "every power request is in history",
  );
});

t.test(
  "storage: the seed's info shape (checked against statfs), health, cleanup job",
  async (t) => {
    const api = servicesApi(t);
    const admin = await tokenFor(api, await addUser(api, "s-admin", "admin"));
    const op = await tokenFor(api, await addUser(api, "s-op", "operator"));
    const [example] = seedJsonAfter(seed, "#### GET /storage/info") as [
      Record<string, Record<string, unknown>>,
    ];
    const info = await call(api, "GET", "/api/storage/info", { token: op });
    t.equal(info.status, 200);
    t.same(
      Object.keys(info.json).sort(),
      Object.keys(example!).sort(),
      "the seed's three sections",
    );
    for (const [section, fields] of Object.entries(example!)) {
      t.same(Object.keys(info.json[section]).sort(), Object.keys(fields).sort(), section);
    }
    t.equal(info.json.images_storage.path, api.imagesDir);
    t.equal(info.json.system_storage.path, "/");
    const s = statfsSync(api.imagesDir);
    t.equal(info.json.images_storage.total_bytes, s.blocks * s.bsize, "total from statfs");

    const health = await call(api, "GET", "/api/storage/health", { token: op });
    t.equal(health.status, 200);
    t.ok(["healthy", "warning", "critical"].includes(health.json.status));
    t.ok(health.json.directories[api.imagesDir].exists);
    t.ok(health.json.directories[api.imagesDir].writable);

    // An orphan: a file named like ours that no image references.
    const orphan = join(api.imagesDir, "img-00000000-0000-4000-8000-000000000000.raw");
    writeFileSync(orphan, Buffer.alloc(4096, 1));
    t.equal(
      (await call(api, "POST", "/api/storage/cleanup", { token: op, body: {} })).status,
      403,
      "cleanup is for admins",
    );
    const dry = await call(api, "POST", "/api/storage/cleanup", { token: admin });
    t.equal(dry.status, 202);
    t.equal(dry.json.dry_run, true, "a dry run unless asked otherwise");
    const dryJob = await api.services.jobs.wait(dry.json.job_id, 10_000);
    t.equal(dryJob.status, "succeeded");
    const dryView = await call(api, "GET", `/api/jobs/${dry.json.job_id}`, { token: op });
    t.same(
      dryView.json.result.files.map((f: { path: string }) => f.path),
      [orphan],
    );
    t.equal(dryView.json.result.removed, 0);
    t.ok(statfsSync(orphan), "still there after the dry run");
    const real = await call(api, "POST", "/api/storage/cleanup", {
      token: admin,
      body: { dry_run: false },
    });
    await api.services.jobs.wait(real.json.job_id, 10_000);
    const realView = await call(api, "GET", `/api/jobs/${real.json.job_id}`, { token: op });
    t.equal(realView.json.result.removed, 1);
    t.throws(() => statfsSync(orphan), "removed");
    const bad = await call(api, "POST", "/api/storage/cleanup", {
      token: admin,
      body: { dry_run: "yes" },
    });
    t.equal(bad.status, 422);
    t.equal(bad.json.field, "dry_run");
  },
);

t.test("jobs: list with filters, one job, its logs, cancel", async (t) => {
  const api = servicesApi(t);
  const adminUser = await addUser(api, "j-admin", "admin");
  const admin = await tokenFor(api, adminUser);
  const opUser = await addUser(api, "j-op", "operator");
  const op = await tokenFor(api, opUser);
  const viewer = await tokenFor(api, await addUser(api, "j-viewer", "viewer"));
  let release!: () => void;
  const gate = new Promise<void>((r) => {
    release = r;
  });
  api.services.jobs.register("test_wait", async (_p, ctx) => {
    ctx.log("info", "waiting for the gate");
    await Promise.race([
      gate,
      new Promise((_, reject) =>
        ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true }),
      ),
    ]);
    return { ok: true };
  });
  const a = api.services.jobs.submit("test_wait", {}, { createdBy: adminUser.id });
  const b = api.services.jobs.submit("test_wait", {}, { createdBy: opUser.id });
  const done = api.services.jobs.submit("test_wait", {}, { createdBy: adminUser.id });
  await new Promise((r) => setTimeout(r, 50));

  const list = await call(api, "GET", "/api/jobs", { token: viewer });
  t.equal(list.status, 200);
  t.same(
    list.json.map((j: { id: number }) => j.id),
    [done.id, b.id, a.id],
    "newest first",
  );
  t.equal(list.headers.get("x-total-count"), "3");
  const running = await call(api, "GET", "/api/jobs?status=running&type=test_wait", {
    token: viewer,
  });
  t.ok(
    running.json.length >= 1 &&
      running.json.every((j: { status: string }) => j.status === "running"),
  );
  const one = await call(api, "GET", `/api/jobs/${a.id}`, { token: viewer });
  t.equal(one.json.created_by_username, "j-admin");
  t.equal(one.json.log_url, `/api/jobs/${a.id}/logs`);
  const logs = await call(api, "GET", `/api/jobs/${a.id}/logs`, { token: viewer });
  t.ok(logs.json.logs.some((l: { message: string }) => l.message === "waiting for the gate"));
  t.ok(logs.json.logs.every((l: { timestamp: string; level: string }) => l.timestamp && l.level));
  const later = await call(api, "GET", `/api/jobs/${a.id}/logs?after=${logs.json.next_after}`, {
    token: viewer,
  });
  t.same(later.json.logs, [], "nothing after the last line read");

  t.equal(
    (await call(api, "POST", `/api/jobs/${a.id}/cancel`, { token: op })).status,
    403,
    "an operator cannot cancel an admin's job",
  );
  const mine = await call(api, "POST", `/api/jobs/${b.id}/cancel`, { token: op });
  t.equal(mine.status, 202);
  t.ok(["cancelling", "cancelled"].includes(mine.json.outcome));
  t.equal((await api.services.jobs.wait(b.id, 5000)).status, "cancelled");
  const adminCancel = await call(api, "POST", `/api/jobs/${a.id}/cancel`, { token: admin });
  t.equal(adminCancel.status, 202);
  t.equal((await api.services.jobs.wait(a.id, 5000)).status, "cancelled");
  release();
  t.equal((await api.services.jobs.wait(done.id, 5000)).status, "succeeded");
  const again = await call(api, "POST", `/api/jobs/${done.id}/cancel`, { token: admin });
  t.equal(again.status, 409, "a finished job cannot be cancelled");
  t.equal((await call(api, "GET", "/api/jobs/999999", { token: viewer })).status, 404);
});

const hasParser = (() => {
  try {
    execFileSync("/usr/bin/python3", ["-c", "import prometheus_client.parser"], {
      stdio: "ignore",
    });
    return true;
  } catch {
    return false;
  }
})();

t.test(
  "/metrics: no token, parsed by prometheus_client, counts the requests made and the jobs",
  { skip: hasParser ? false : "needs the Debian package python3-prometheus-client" },
  async (t) => {
    const api = servicesApi(t);
    const { base } = await api.listen();
    const token = await tokenFor(api, await addUser(api, "m-admin", "admin"));
    const h = { authorization: `Bearer ${token}` };
    for (let i = 0; i < 3; i++) await fetch(`${base}/api/images`, { headers: h });
    await fetch(`${base}/api/images/424242`, { headers: h });
    await fetch(`${base}/api/images/434343`, { headers: h });
    await fetch(`${base}/api/images`); // 401
    await fetch(`${base}/api/no/such/route`, { headers: h });
    const cleanup = await fetch(`${base}/api/storage/cleanup`, { method: "POST", headers: h });
    await api.services.jobs.wait(((await cleanup.json()) as { job_id: number }).job_id, 10_000);

    const res = await fetch(`${base}/metrics`);
    t.equal(res.status, 200, "no token needed");
    t.match(res.headers.get("content-type"), /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    const script = `
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.setdefault(s.name, []).append([s.labels, s.value])
print(json.dumps(out))
`;
    const parsed = JSON.parse(
      execFileSync("/usr/bin/python3", ["-c", script], { input: text }).toString(),
    ) as Record<string, [Record<string, string>, number][]>;
    const count = (labels: Record<string, string>) =>
      (parsed.bootfleet_api_requests_total ?? [])
        .filter(([l]) => Object.entries(labels).every(([k, v]) => l[k] === v))
        .reduce((n, [, v]) => n + v, 0);
    t.equal(count({ method: "GET", route: "/api/images", status: "200" }), 3);
    t.equal(count({ method: "GET", route: "/api/images", status: "401" }), 1);
    t.equal(
      count({ method: "GET", route: "/api/images/:id", status: "404" }),
      2,
      "by route pattern, never the raw path",
    );
    t.equal(count({ route: "unmatched", status: "404" }), 1);
    t.equal(count({ method: "POST", route: "/api/storage/cleanup", status: "202" }), 1);
    t.notOk(text.includes("424242"), "no id from a path became a label");
    const jobs = parsed.bootfleet_jobs_finished_total ?? [];
    t.same(
      jobs.filter(([, v]) => v > 0).map(([l, v]) => [l.type, l.status, v]),
      [["storage_cleanup", "succeeded", 1]],
      "the job runner's finished job is counted",
    );
    t.ok(parsed.bootfleet_api_request_duration_seconds_count, "durations are histograms");
    t.same(parsed.bootfleet_active_sessions, [[{}, 0]]);
  },
);
