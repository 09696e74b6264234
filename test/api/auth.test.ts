import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { SignJWT, UnsecuredJWT } from "jose";
import t from "tap";
import { loadOrCreateSigningKey } from "../../src/api/auth/keys.js";
import { hashPassword, verifyPassword } from "../../src/api/auth/password.js";
import { addUser, call, makeApi, seedJsonAfter, tokenFor } from "./helpers.js";

const seed = readFileSync(new URL("./fixtures/ggnet-api.md", import.meta.url), "utf8");

t.test(
  "password hashes: scrypt with parameters and salt stored, verified in constant time",
  async (t) => {
    const h1 = await hashPassword("correct horse");
    const h2 = await hashPassword("correct horse");
    t.match(h1, /^scrypt\$32768\$8\$3\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$/);
    t.not(h1, h2, "a fresh salt each time");
    t.equal(await verifyPassword("correct horse", h1), true);
    t.equal(await verifyPassword("correct horsE", h1), false);
    t.equal(await verifyPassword("x", "scrypt$1$1$1$AA$AA"), false, "malformed hash refused");
  },
);

t.test(
  "login: the seed's response shape, by username and by email; bad passwords refused",
  async (t) => {
    const api = makeApi(t);
    await addUser(api, "admin", "admin", "admin123", { email: "admin@ggnet.local" });
    const [expected] = seedJsonAfter(seed, "### Login") as [Record<string, unknown>];
    const r = await call(api, "POST", "/api/auth/login", {
      body: { username: "admin", password: "admin123" },
    });
    t.equal(r.status, 200);
    t.same(Object.keys(r.json).sort(), Object.keys(expected).sort());
    t.equal(r.json.token_type, expected.token_type);
    t.equal(r.json.expires_in, expected.expires_in);
    const byEmail = await call(api, "POST", "/api/auth/login", {
      body: { email: "admin@ggnet.local", password: "admin123" },
    });
    t.equal(byEmail.status, 200);
    const bad = await call(api, "POST", "/api/auth/login", {
      body: { username: "admin", password: "nope" },
    });
    t.equal(bad.status, 401);
    t.equal(bad.json.error, "authentication_error");
    t.type(bad.json.timestamp, "number");
    const unknown = await call(api, "POST", "/api/auth/login", {
      body: { username: "ghost", password: "nope" },
    });
    t.equal(unknown.status, 401);
    t.equal(
      unknown.json.detail,
      bad.json.detail,
      "same answer for unknown user and wrong password",
    );
    t.ok(api.store.users.findByLogin("admin")!.last_login, "last_login stamped");
  },
);

t.test("login for an unknown user costs as much as for a known one", async (t) => {
  const api = makeApi(t);
  await addUser(api, "known", "viewer", "known-password");
  const time = async (username: string) => {
    const start = performance.now();
    await call(api, "POST", "/api/auth/login", { body: { username, password: "wrong-password" } });
    return performance.now() - start;
  };
  await time("ghost"); // the dummy hash is made on first use
  const known: number[] = [];
  const unknown: number[] = [];
  for (let i = 0; i < 5; i++) {
    known.push(await time("known"));
    unknown.push(await time(`ghost${i}`));
  }
  const median = (a: number[]) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
  const k = median(known);
  const u = median(unknown);
  t.comment(`median known ${k.toFixed(1)} ms, unknown ${u.toFixed(1)} ms`);
  t.ok(k > 20, "a password check does real scrypt work");
  // Loose bound: the CI machine is shared, a single scrypt varies by tens of percent.
  t.ok(u > k * 0.5 && u < k * 1.5, `within 50%: known ${k.toFixed(1)} unknown ${u.toFixed(1)}`);
});

t.test("/auth/me has the seed's fields", async (t) => {
  const api = makeApi(t);
  const u = await addUser(api, "admin", "admin", "admin123", {
    email: "admin@ggnet.local",
    full_name: "System Administrator",
  });
  const [expected] = seedJsonAfter(seed, "#### GET /auth/me") as [Record<string, unknown>];
  const r = await call(api, "GET", "/api/auth/me", { token: await tokenFor(api, u) });
  t.equal(r.status, 200);
  for (const k of Object.keys(expected)) t.ok(k in r.json, `field ${k}`);
  t.equal(r.json.is_active, true);
  t.equal(r.json.role, "admin");
  t.notOk("password_hash" in r.json);
});

t.test("refresh rotates; reusing a used refresh token revokes the whole family", async (t) => {
  const api = makeApi(t);
  const u = await addUser(api, "op", "operator");
  const first = await api.tokens.issue(u, null);
  const r1 = await call(api, "POST", "/api/auth/refresh", {
    body: { refresh_token: first.refresh_token },
  });
  t.equal(r1.status, 200);
  t.not(r1.json.refresh_token, first.refresh_token);
  t.equal((await call(api, "GET", "/api/auth/me", { token: r1.json.access_token })).status, 200);
  // the old one again: theft assumed, family revoked
  const reuse = await call(api, "POST", "/api/auth/refresh", {
    body: { refresh_token: first.refresh_token },
  });
  t.equal(reuse.status, 401);
  t.equal(reuse.json.error, "authentication_error");
  t.equal(
    (await call(api, "GET", "/api/auth/me", { token: r1.json.access_token })).status,
    401,
    "new access token dead",
  );
  const r2 = await call(api, "POST", "/api/auth/refresh", {
    body: { refresh_token: r1.json.refresh_token },
  });
  t.equal(r2.status, 401, "new refresh token dead too");
  // another login of the same user is untouched
  const other = await api.tokens.issue(u, null);
  t.equal((await call(api, "GET", "/api/auth/me", { token: other.access_token })).status, 200);
});

t.test("logout: the session's tokens are refused afterwards", async (t) => {
  const api = makeApi(t);
  const u = await addUser(api, "v", "viewer");
  const pair = await api.tokens.issue(u, null);
  const out = await call(api, "POST", "/api/auth/logout", { token: pair.access_token });
  t.equal(out.status, 200);
  const me = await call(api, "GET", "/api/auth/me", { token: pair.access_token });
  t.equal(me.status, 401);
  t.equal(me.json.error, "authentication_error");
  t.equal(
    (await call(api, "POST", "/api/auth/refresh", { body: { refresh_token: pair.refresh_token } }))
      .status,
    401,
  );
  t.equal((await call(api, "POST", "/api/auth/logout", { token: pair.access_token })).status, 401);
});

t.test("forged, expired, early, misused and orphaned tokens are refused", async (t) => {
  const api = makeApi(t);
  const u = await addUser(api, "a", "admin");
  const pair = await api.tokens.issue(u, null);
  const me = (token: string) => call(api, "GET", "/api/auth/me", { token });
  const sid = api.store.authSessions.get(
    (api.store.db.prepare("SELECT id FROM auth_sessions").get() as { id: string }).id,
  )!.id;
  const claims = { sid, use: "access" };
  const now = Math.floor(api.now.ms / 1000);
  const build = (key: Uint8Array, iat = now, nbf = now, exp = now + 600) =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: "HS256" })
      .setSubject(String(u.id))
      .setJti("x")
      .setIssuer("bootfleet")
      .setAudience("bootfleet-api")
      .setIssuedAt(iat)
      .setNotBefore(nbf)
      .setExpirationTime(exp)
      .sign(key);
  t.equal((await me(await build(api.key))).status, 200, "a well-made token passes (control)");
  const none = new UnsecuredJWT(claims)
    .setSubject(String(u.id))
    .setJti("x")
    .setIssuer("bootfleet")
    .setAudience("bootfleet-api")
    .setIssuedAt(now)
    .setNotBefore(now)
    .setExpirationTime(now + 600)
    .encode();
  t.equal((await me(none)).status, 401, "alg none");
  t.equal((await me(await build(new Uint8Array(32).fill(7)))).status, 401, "wrong key");
  t.equal(
    (await me(await build(api.key, now - 4000, now - 4000, now - 2000))).status,
    401,
    "expired",
  );
  t.equal(
    (await me(await build(api.key, now, now + 3600, now + 7200))).status,
    401,
    "not yet valid",
  );
  t.equal((await me(pair.refresh_token)).status, 401, "refresh token as access token");
  t.equal(
    (await call(api, "POST", "/api/auth/refresh", { body: { refresh_token: pair.access_token } }))
      .status,
    401,
    "access token as refresh token",
  );
  // the access token expires after 1800 s of the (fake) clock
  api.now.ms += 1801 * 1000;
  const late = await me(pair.access_token);
  t.equal(late.status, 401);
  t.match(late.json.detail, /expired/);
  api.now.ms -= 1801 * 1000;

  const d = await addUser(api, "d", "viewer");
  const dt = await tokenFor(api, d);
  api.store.users.update(d.id, { status: "disabled" });
  t.equal((await me(dt)).status, 401, "disabled user");
  const g = await addUser(api, "g", "viewer");
  const gt = await tokenFor(api, g);
  api.store.users.delete(g.id);
  t.equal((await me(gt)).status, 401, "deleted user");
  t.equal(
    (await call(api, "GET", "/api/auth/me", { headers: { authorization: "Basic YTpi" } })).status,
    401,
  );
});

t.test("signing key: made 0600 at first start, the same one after a restart", async (t) => {
  const dir = t.testdir({});
  const path = join(dir, "api-signing.key");
  const k1 = loadOrCreateSigningKey(path);
  t.equal(statSync(path).mode & 0o777, 0o600);
  t.equal(k1.length, 32);
  t.same(loadOrCreateSigningKey(path), k1);
});
