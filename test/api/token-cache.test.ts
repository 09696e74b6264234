import { join } from "node:path";
import t from "tap";
import { Store } from "../../src/store/index.js";
import { addUser, call, makeApi, type TestApi, tokenFor } from "./helpers.js";

// A verified access token is kept by the TokenService (src/api/auth/tokens.ts) while the
// store is unchanged and the token and its session are within their times. Each check
// below uses the token successfully first, so that it is kept, then changes one thing.

/** Counts the reads of login sessions: a kept token needs none. */
function countSessionReads(api: TestApi) {
  const repo = api.store.authSessions;
  const get = repo.get.bind(repo);
  const n = { reads: 0 };
  repo.get = (id) => {
    n.reads++;
    return get(id);
  };
  return n;
}

const me = (api: TestApi, token: string) => call(api, "GET", "/api/auth/me", { token });

t.test("a kept token is checked once, then answered from memory", async (t) => {
  const api = makeApi(t);
  const token = await tokenFor(api, await addUser(api, "vic", "viewer"));
  const n = countSessionReads(api);
  t.equal((await me(api, token)).status, 200);
  t.equal(n.reads, 1, "verified once");
  for (let i = 0; i < 5; i++) t.equal((await me(api, token)).status, 200);
  t.equal(n.reads, 1, "then kept");
  t.equal((await me(api, `${token}x`)).status, 401, "another string is not the kept token");
});

t.test("logout, a disabled user, a new role, a deleted user: at once", async (t) => {
  const api = makeApi(t);
  const admin = await addUser(api, "root", "admin");
  const adminToken = await tokenFor(api, admin);
  const pair = await api.tokens.issue(await addUser(api, "vic", "viewer"), null);
  t.equal((await me(api, pair.access_token)).status, 200);
  t.equal((await call(api, "POST", "/api/auth/logout", { token: pair.access_token })).status, 200);
  t.equal((await me(api, pair.access_token)).status, 401, "logged out");

  const d = await addUser(api, "dora", "viewer");
  const dt = await tokenFor(api, d);
  t.equal((await me(api, dt)).status, 200);
  api.store.users.update(d.id, { status: "disabled" });
  const disabled = await me(api, dt);
  t.equal(disabled.status, 401, "disabled user");
  t.match(disabled.json.detail, /disabled/);

  // A new role: an operator's route refused once the role is viewer.
  const o = await addUser(api, "otto", "operator");
  const ot = await tokenFor(api, o);
  const create = (name: string, mac: string) =>
    call(api, "POST", "/api/machines", { token: ot, body: { name, mac_address: mac } });
  t.equal((await create("pc-1", "52:54:00:00:04:01")).status, 201);
  api.store.users.update(o.id, { role: "viewer" });
  t.equal((await create("pc-2", "52:54:00:00:04:02")).status, 403, "viewer now");
  t.equal((await me(api, ot)).json.role, "viewer");
  // Through the API a role change also ends the user's logins.
  const demoted = await call(api, "PUT", `/api/users/${o.id}`, {
    token: adminToken,
    body: { role: "operator" },
  });
  t.equal(demoted.status, 200);
  t.equal((await me(api, ot)).status, 401, "logins ended by the role change");

  const g = await addUser(api, "gus", "viewer");
  const gt = await tokenFor(api, g);
  t.equal((await me(api, gt)).status, 200);
  api.store.users.delete(g.id);
  t.equal((await me(api, gt)).status, 401, "deleted user");
});

t.test("a change made by another process (the bootfleet command) is seen", async (t) => {
  const api = makeApi(t);
  const u = await addUser(api, "vic", "viewer");
  const token = await tokenFor(api, u);
  t.equal((await me(api, token)).status, 200);
  const other = Store.open({ path: join(api.dir, "bootfleet.db"), busyTimeoutMs: 2000 });
  other.users.update(u.id, { status: "disabled" });
  other.close();
  // Another process's commit counts from the next turn of the event loop (Store.generation).
  await new Promise((r) => setImmediate(r));
  t.equal((await me(api, token)).status, 401, "disabled from another connection");
});

t.test("the token's and the session's times still apply to a kept token", async (t) => {
  const api = makeApi(t);
  const u = await addUser(api, "vic", "viewer");
  const token = await tokenFor(api, u);
  const start = api.now.ms;
  t.equal((await me(api, token)).status, 200);
  api.now.ms = start + 1799_000;
  t.equal((await me(api, token)).status, 200, "within its 30 minutes");
  api.now.ms = start + 1800_000;
  const late = await me(api, token);
  t.equal(late.status, 401, "expired at its exp");
  t.match(late.json.detail, /expired/);

  api.now.ms = start;
  const early = await tokenFor(api, u);
  t.equal((await me(api, early)).status, 200);
  api.now.ms = start - 2000;
  const before = await me(api, early);
  t.equal(before.status, 401, "a clock set back before its nbf");
  t.match(before.json.detail, /not yet valid/);

  // A session that ends before its access token does (the week's end): 401 at its end.
  api.now.ms = start;
  const s = await tokenFor(api, u);
  t.equal((await me(api, s)).status, 200);
  const sid = (
    api.store.db.prepare("SELECT id FROM auth_sessions ORDER BY rowid DESC LIMIT 1").get() as {
      id: string;
    }
  ).id;
  const ends = new Date(start + 60_000).toISOString();
  // A write, so the kept token is checked again: at the end it must be refused.
  api.store.db.prepare("UPDATE auth_sessions SET expires_at = ? WHERE id = ?").run(ends, sid);
  t.equal((await me(api, s)).status, 200, "before the session's end");
  api.now.ms = start + 60_000;
  const ended = await me(api, s);
  t.equal(ended.status, 401, "at the session's end, with no write in between");
  t.match(ended.json.detail, /session expired/);
});

t.test("kept(): only a token verified already, and only until the next write", async (t) => {
  const api = makeApi(t);
  const user = await addUser(api, "vic", "viewer");
  const token = await tokenFor(api, user);
  t.equal(api.tokens.kept(token), undefined, "not verified yet");
  const caller = await api.tokens.verifyAccess(token);
  t.same(api.tokens.kept(token), caller, "kept once verified");
  api.store.users.update(user.id, { status: "disabled" });
  t.equal(api.tokens.kept(token), undefined, "a write: verified again");
  const refused = await api.tokens.verifyAccess(token).catch((err: unknown) => err);
  t.equal((refused as { status?: number }).status, 401, "and refused");
  t.equal(api.tokens.kept(token), undefined, "a refused token is not kept");
});
