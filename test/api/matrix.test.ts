import t from "tap";
import * as z from "zod";
import { ROLES } from "../../src/store/users.js";
import { addUser, call, makeApi } from "./helpers.js";

/**
 * Walks every route of the registry (the other modules' routes join by themselves) with
 * no token and with a token of every role: no token → 401 on every non-public route; a
 * role the route does not list → 403; a listed role gets past auth (and a GET without
 * path parameters answers 2xx). Mutating routes are called on an id that does not exist
 * (or with an empty body), so no fixture is destroyed along the way.
 */
t.test("route × role matrix", async (t) => {
  // Image builds with no recipe installed: GET /api/images/recipes answers every reader
  // (the build itself is test/images/build.test.ts).
  const api = makeApi(t, {
    services: {
      config: () => ({ fleet: { stall_timeout_seconds: 120 } }),
      builds: {
        recipes: () => [],
        build: () => {
          throw new Error("no build in the matrix test");
        },
      },
    },
  });
  const users = Object.fromEntries(
    await Promise.all(ROLES.map(async (r) => [r, await addUser(api, `m-${r}`, r)] as const)),
  );
  t.ok(api.routes.length >= 20, `routes discovered: ${api.routes.length}`);
  const fill = (path: string) =>
    path.replace(/:([A-Za-z_]+)/g, (_, name) => (name === "id" ? "999999" : "nothing-here"));
  let checked = 0;
  for (const route of api.routes) {
    const path = `/api${fill(route.path)}`;
    const body = route.method === "GET" || route.method === "DELETE" ? undefined : {};
    const anon = await call(api, route.method, path, { body });
    if (route.roles === "public") {
      t.not(anon.status, 401, `${route.method} ${route.path} is public`);
      t.not(anon.status, 403, `${route.method} ${route.path} is public`);
      continue;
    }
    t.equal(anon.status, 401, `${route.method} ${route.path} without a token`);
    t.equal(anon.json?.error, "authentication_error");
    for (const role of ROLES) {
      // a fresh login session each time: a logout route must not end the next check's
      const token = (await api.tokens.issue(users[role]!, null)).access_token;
      const r = await call(api, route.method, path, { token, body });
      const allowed = route.roles.includes(role);
      const what = `${route.method} ${route.path} as ${role}`;
      if (!allowed) {
        t.equal(r.status, 403, what);
        t.equal(r.json?.error, "authorization_error", what);
      } else {
        t.ok(r.status !== 401 && r.status !== 403, `${what}: allowed (${r.status})`);
        t.ok(r.status < 500 || r.status === 503, `${what}: no server error (${r.status})`);
        const hasPathParams = route.path.includes(":");
        if (route.method === "GET" && !hasPathParams)
          t.ok(r.status >= 200 && r.status < 300, `${what}: 2xx (${r.status})`);
      }
      checked++;
    }
  }
  t.comment(`${checked} route × role checks`);
});

t.test("every route declares roles and, where it takes input, schemas", async (t) => {
  const api = makeApi(t);
  for (const r of api.routes) {
    t.ok(
      r.roles === "public" || (Array.isArray(r.roles) && r.roles.length > 0),
      `${r.method} ${r.path} declares roles`,
    );
    if (r.path.includes(":"))
      t.ok(r.params instanceof z.ZodType, `${r.method} ${r.path} validates its path parameters`);
  }
});
