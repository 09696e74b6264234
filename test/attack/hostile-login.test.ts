// Password guessing against the login route. Before: the rate limit counted each IPv6
// address apart (a host owns a whole /64), refreshes spent the login budget, an account
// had no back-off of its own, and a mistyped name (often a password) went into history
// verbatim.

import t from "tap";
import { addressKey } from "../../src/api/ratelimit.js";
import { addUser, call, makeApi } from "../api/helpers.js";
import { servicesApi } from "../api/services-helpers.js";

async function post(base: string, path: string, body: unknown) {
  const res = await fetch(`${base}/api${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  // biome-ignore lint/suspicious/noExplicitAny: test reads JSON answers
  return { status: res.status, headers: res.headers, json: (await res.json()) as any };
}

t.test("an account refuses logins for a while after 5 failures in a row", async (t) => {
  const api = servicesApi(t);
  const { base } = await api.listen();
  const alice = await addUser(api, "alice", "viewer", "right-password-1");
  for (let i = 1; i <= 5; i++) {
    const r = await post(base, "/auth/login", { username: "alice", password: `guess-${i}` });
    t.equal(r.status, 401, `wrong password ${i}: 401`);
  }
  const locked = await post(base, "/auth/login", {
    username: "alice",
    password: "right-password-1",
  });
  t.equal(locked.status, 429, "even the right password waits out the lock");
  t.match(locked.json.detail, /too many failed logins for this account/);
  t.ok(Number(locked.headers.get("retry-after")) >= 1, "Retry-After says how long");
  t.same(api.store.users.loginFailures(alice.id).failed_logins, 5, "the count is in the store");
  t.ok(api.store.users.loginFailures(alice.id).login_locked_until, "and the lock");
  // Another account is not affected, and a success there resets nothing of alice's.
  await addUser(api, "bob", "viewer", "bobs-password-1");
  const bob = await post(base, "/auth/login", { username: "bob", password: "bobs-password-1" });
  t.equal(bob.status, 200);
  // Once the lock has passed, the right password works and clears the count.
  api.store.users.setLoginFailures(alice.id, 5, new Date(Date.now() - 1000).toISOString());
  const ok = await post(base, "/auth/login", { username: "alice", password: "right-password-1" });
  t.equal(ok.status, 200);
  t.same(api.store.users.loginFailures(alice.id), { failed_logins: 0, login_locked_until: null });
});

t.test("a failed login with an unknown name does not store the name", async (t) => {
  const api = servicesApi(t);
  const { base } = await api.listen();
  const r = await post(base, "/auth/login", {
    username: "Tr0ub4dor-and-3",
    password: "whatever-it-is",
  });
  t.equal(r.status, 401);
  const rows = api.store.db.prepare("SELECT * FROM history_events").all();
  t.ok(rows.length > 0, "the failure is in history");
  t.notMatch(JSON.stringify(rows), /Tr0ub4dor/, "the typed name is nowhere in history");
  t.match(JSON.stringify(rows), /unknown user/);
});

t.test("refreshes are counted apart from logins", async (t) => {
  const api = servicesApi(t, { rateLimits: { auth: { limit: 2, windowSeconds: 300 } } });
  const { base } = await api.listen();
  await addUser(api, "carol", "viewer", "carols-password-1");
  const login = await post(base, "/auth/login", {
    username: "carol",
    password: "carols-password-1",
  });
  t.equal(login.status, 200);
  let refresh = login.json.refresh_token as string;
  for (let i = 0; i < 5; i++) {
    const r = await post(base, "/auth/refresh", { refresh_token: refresh });
    t.equal(r.status, 200, `refresh ${i + 1}`);
    refresh = r.json.refresh_token;
  }
  const again = await post(base, "/auth/login", {
    username: "carol",
    password: "carols-password-1",
  });
  t.equal(again.status, 200, "the second login of the budget of 2 is still allowed");
  const third = await post(base, "/auth/login", {
    username: "carol",
    password: "carols-password-1",
  });
  t.equal(third.status, 429, "the third is not");
});

t.test("the address rate limit counts an IPv6 /64 as one caller", async (t) => {
  t.equal(addressKey("2001:db8:1:2::1"), "2001:db8:1:2::/64");
  t.equal(addressKey("2001:0db8:0001:0002:ffff:1:2:3"), "2001:db8:1:2::/64");
  t.equal(addressKey("::ffff:192.0.2.7"), "192.0.2.7");
  t.equal(addressKey("192.0.2.7"), "192.0.2.7");
  t.equal(addressKey("fe80::1%eth0"), "fe80:0:0:0::/64");
  const api = makeApi(t, { rateLimits: { auth: { limit: 3, windowSeconds: 300 } } });
  const from = (remoteAddress: string) => ({ incoming: { socket: { remoteAddress } } });
  const body = { username: "nobody", password: "wrong-password" };
  const statuses = [];
  for (const a of [
    "2001:db8:1:2::10",
    "2001:db8:1:2::11",
    "2001:db8:1:2:aaaa::1",
    "2001:db8:1:2::12",
  ]) {
    statuses.push((await call(api, "POST", "/api/auth/login", { body, env: from(a) })).status);
  }
  t.same(statuses, [401, 401, 401, 429], "four addresses of one /64 share one budget of 3");
  const other = await call(api, "POST", "/api/auth/login", { body, env: from("2001:db8:1:3::10") });
  t.equal(other.status, 401, "the next /64 has its own budget");
  for (let i = 0; i < 3; i++)
    await call(api, "POST", "/api/auth/login", { body, env: from("::ffff:10.0.0.9") });
  const v4 = await call(api, "POST", "/api/auth/login", { body, env: from("10.0.0.9") });
  t.equal(v4.status, 429, "an IPv4-mapped address counts as the IPv4 address");
  const v4b = await call(api, "POST", "/api/auth/login", { body, env: from("10.0.0.10") });
  t.equal(v4b.status, 401, "each IPv4 address has its own budget");
});
