import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { ensureInitialAdmin, INITIAL_PASSWORD_FILE } from "../../src/api/auth/initial-admin.js";
import { addUser, call, makeApi, memoryLogger, tokenFor } from "./helpers.js";

t.test("first start: admin with a one-time password in a 0600 file, never logged", async (t) => {
  const api = makeApi(t);
  const file = join(api.dir, INITIAL_PASSWORD_FILE);
  const { log, lines } = memoryLogger();
  await ensureInitialAdmin(api.store, file, log);
  t.equal(statSync(file).mode & 0o777, 0o600);
  const password = readFileSync(file, "utf8").trim();
  t.ok(password.length >= 20);
  t.match(lines.join(""), file, "the path is logged");
  t.notMatch(lines.join(""), password, "the password is not");
  const login = await call(api, "POST", "/api/auth/login", {
    body: { username: "admin", password },
  });
  t.equal(login.status, 200);
  // a second start changes nothing
  await ensureInitialAdmin(api.store, file, log);
  t.equal(readFileSync(file, "utf8").trim(), password);
  t.equal(api.store.users.count(), 1);
});

t.test("the file is deleted once the admin changes the password", async (t) => {
  const api = makeApi(t, {});
  const file = join(api.dir, INITIAL_PASSWORD_FILE);
  const { log } = memoryLogger();
  await ensureInitialAdmin(api.store, file, log);
  const { app: app2 } = await import("../../src/api/app.js").then((m) =>
    m.createApi({
      log,
      version: "t",
      state: () => "ready",
      store: api.store,
      signingKey: api.key,
      initialPasswordFile: file,
      rateLimits: { auth: { limit: 100, windowSeconds: 60 } },
    }),
  );
  const admin = api.store.users.findByLogin("admin")!;
  const token = await tokenFor(api, admin);
  const res = await app2.request(`/api/users/${admin.id}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ password: "a-new-password" }),
  });
  t.equal(res.status, 200);
  t.notOk(existsSync(file), "deleted after the password change");
});

t.test(
  "the file is deleted when another admin exists (e.g. made by the CLI while stopped)",
  async (t) => {
    const api = makeApi(t);
    const file = join(api.dir, INITIAL_PASSWORD_FILE);
    const { log } = memoryLogger();
    await ensureInitialAdmin(api.store, file, log);
    await addUser(api, "second", "admin");
    t.ok(existsSync(file));
    await ensureInitialAdmin(api.store, file, log); // what the next daemon start does
    t.notOk(existsSync(file));
  },
);
