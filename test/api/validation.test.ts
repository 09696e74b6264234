import t from "tap";
import * as z from "zod";
import { addUser, call, makeApi, tokenFor } from "./helpers.js";

/** Top-level fields of a body schema, from its JSON schema (what OpenAPI shows too). */
function bodyFields(schema: z.ZodType): string[] {
  const js = z.toJSONSchema(schema, { io: "input", unrepresentable: "any" }) as {
    properties?: Record<string, unknown>;
    anyOf?: { properties?: Record<string, unknown> }[];
  };
  const props = js.properties ?? js.anyOf?.find((s) => s.properties)?.properties ?? {};
  return Object.keys(props);
}

t.test("every body field of every route: a wrong type → 422 naming the field", async (t) => {
  const api = makeApi(t);
  const admin = await addUser(api, "v-admin", "admin");
  const token = await tokenFor(api, admin);
  let fields = 0;
  for (const route of api.routes) {
    if (!route.body) continue;
    // Path parameters are checked before the body: every id-like one gets a valid number.
    const path = `/api${route.path.replace(/:([A-Za-z_]+)/g, (_, n: string) =>
      n === "id" ? String(admin.id) : n.endsWith("id") ? "1" : "x",
    )}`;
    const names = bodyFields(route.body);
    t.ok(names.length > 0, `${route.method} ${route.path} has fields`);
    for (const field of names) {
      // An object is the wrong type for every scalar field of the API.
      const r = await call(api, route.method, path, { token, body: { [field]: { nested: true } } });
      t.equal(r.status, 422, `${route.method} ${route.path} ${field}`);
      t.equal(r.json?.error, "validation_error");
      t.equal(r.json?.field, field, `${route.method} ${route.path}: field names ${field}`);
      t.match(r.json?.detail, new RegExp(`^${field}:`), "detail names the field");
      fields++;
    }
    const unknown = await call(api, route.method, path, { token, body: { no_such_field: 1 } });
    t.equal(unknown.status, 422, `${route.method} ${route.path} unknown field`);
    t.equal(unknown.json?.field, "no_such_field");
  }
  t.comment(`${fields} body fields checked`);
});

t.test("names: too long, control characters; malformed JSON", async (t) => {
  const api = makeApi(t);
  const token = await tokenFor(api, await addUser(api, "n-admin", "admin"));
  const base = { name: "PC-1", mac_address: "00:11:22:33:44:55" };
  for (const [value, why] of [
    ["x".repeat(65), "too long"],
    ["PC\n1", "newline"],
    ["PC\u00001", "NUL"],
    ["PC\u001b[31m", "escape"],
    ["", "empty"],
  ] as const) {
    const r = await call(api, "POST", "/api/machines", { token, body: { ...base, name: value } });
    t.equal(r.status, 422, why);
    t.equal(r.json.field, "name", why);
  }
  const u = await call(api, "POST", "/api/users", {
    token,
    body: { username: "bad\nname", password: "long-enough-1", role: "viewer" },
  });
  t.equal(u.json.field, "username");
  const bad = await call(api, "POST", "/api/machines", { token, body: "{not json" });
  t.equal(bad.status, 400);
  t.equal(bad.json.error, "validation_error");
});

t.test("list parameters: skip/limit/sort/order validated, naming the parameter", async (t) => {
  const api = makeApi(t);
  const token = await tokenFor(api, await addUser(api, "l-admin", "admin"));
  for (const [q, field] of [
    ["skip=-1", "skip"],
    ["limit=1001", "limit"],
    ["limit=0", "limit"],
    ["sort=password_hash", "sort"],
    ["order=sideways", "order"],
    ["status=flying", "status"],
  ] as const) {
    const r = await call(api, "GET", `/api/machines?${q}`, { token });
    t.equal(r.status, 422, q);
    t.equal(r.json.field, field, q);
    t.match(r.json.detail, field);
  }
  t.equal((await call(api, "GET", "/api/machines?limit=1000", { token })).status, 200);
});
