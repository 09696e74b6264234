import t from "tap";
import * as z from "zod";
import { ApiError } from "../../src/api/errors.js";
import { listQuery } from "../../src/api/list.js";
import { QueryMemo } from "../../src/api/query-memo.js";
import { defineRoute, type RouteModule } from "../../src/api/route.js";
import { ROUTE_MODULES } from "../../src/api/routes.js";
import { addUser, call, makeApi, tokenFor } from "./helpers.js";

// A route's validated query strings are kept (src/api/query-memo.ts): the same query string
// gives the same frozen result without being parsed again; a refused one is refused again.

const schema = listQuery({ sort: ["id", "name"] }, { room: z.string().max(8).optional() });

t.test("the schema's result, kept per query string, frozen", async (t) => {
  const memo = new QueryMemo(schema);
  let parses = 0;
  const params = (p: Record<string, string>) => () => {
    parses++;
    return p;
  };
  const a = memo.parse("http://h/api/x?limit=5&room=r1", params({ limit: "5", room: "r1" }));
  t.same(a, { skip: 0, limit: 5, sort: "id", order: "asc", room: "r1" });
  const b = memo.parse("http://h/api/x?limit=5&room=r1", params({ limit: "5", room: "r1" }));
  t.equal(b, a, "the same result");
  t.equal(parses, 1, "parsed once");
  t.throws(() => {
    (a as { limit: number }).limit = 1000;
  }, TypeError);
  t.equal(a.limit, 5, "frozen: no handler changes what the next request gets");

  const other = memo.parse("http://h/api/x?limit=6", params({ limit: "6" }));
  t.equal(other.limit, 6, "another query string, its own result");
  t.same(memo.parse("http://h/api/x", params({})), schema.parse({}), "no query string");

  for (let i = 0; i < 2; i++) {
    let refused: unknown;
    try {
      memo.parse("http://h/api/x?limit=0", params({ limit: "0" }));
    } catch (err) {
      refused = err;
    }
    t.ok(refused instanceof ApiError && refused.status === 422, "refused each time");
  }
  t.equal(memo.size, 3, "a refused query string is not kept");

  const small = new QueryMemo(schema, 2);
  for (const n of [1, 2, 3]) small.parse(`?limit=${n}`, params({ limit: String(n) }));
  t.equal(small.size, 2, "at most its size");
});

t.test("through the app: one result per query string, and a write seen at once", async (t) => {
  const seen: unknown[] = [];
  const probe: RouteModule = () => [
    defineRoute({
      method: "GET",
      path: "/probe",
      tag: "probe",
      summary: "test",
      roles: "public",
      query: schema,
      handler: ({ query }) => {
        seen.push(query);
        return { limit: query.limit };
      },
    }),
  ];
  const api = makeApi(t, { modules: [...ROUTE_MODULES, probe] });
  for (let i = 0; i < 2; i++) t.equal((await call(api, "GET", "/api/probe?limit=7")).json.limit, 7);
  t.equal(seen[0], seen[1], "the handler got the kept result the second time");
  t.equal((await call(api, "GET", "/api/probe?limit=8")).json.limit, 8);
  t.equal((await call(api, "GET", "/api/probe?limit=0")).status, 422);
  t.equal((await call(api, "GET", "/api/probe?limit=0")).status, 422, "refused again");

  const token = await tokenFor(api, await addUser(api, "root", "admin"));
  const list = () => call(api, "GET", "/api/machines?limit=1", { token });
  t.equal((await list()).headers.get("x-total-count"), "0");
  const made = await call(api, "POST", "/api/machines", {
    token,
    body: { name: "pc-1", mac_address: "52:54:00:00:08:01" },
  });
  t.equal(made.status, 201);
  const after = await list();
  t.equal(after.headers.get("x-total-count"), "1", "the write is in the next answer");
  t.equal(after.json[0].name, "pc-1");
});
