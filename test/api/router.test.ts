import { Hono } from "hono";
import { TrieRouter } from "hono/router/trie-router";
import t from "tap";
import { MemoRouter } from "../../src/api/router.js";
import { addUser, call, makeApi, tokenFor } from "./helpers.js";

// The API's router keeps the match of a path without parameters (src/api/router.ts). Each
// check compares with what Hono's own router answers, or with the answer the app gave
// before anything was kept.

t.test("the API app matches through it: fixed paths kept, paths with an id not", async (t) => {
  const api = makeApi(t);
  t.type(api.app.router, MemoRouter, "createApi's app uses the memo router");
  const router = api.app.router as MemoRouter<unknown>;
  const token = await tokenFor(api, await addUser(api, "root", "admin"));
  const ids: number[] = [];
  for (const name of ["pc-1", "pc-2"]) {
    const r = await call(api, "POST", "/api/machines", {
      token,
      body: { name, mac_address: `52:54:00:00:07:0${ids.length + 1}` },
    });
    t.equal(r.status, 201);
    ids.push(r.json.id);
  }
  const first = await call(api, "GET", "/api/machines", { token });
  const kept = router.keptSize;
  const again = await call(api, "GET", "/api/machines", { token });
  t.equal(again.status, 200);
  t.equal(again.text, first.text, "the same answer from the kept match");
  t.equal(router.keptSize, kept, "kept once");
  for (const [i, id] of ids.entries()) {
    const one = await call(api, "GET", `/api/machines/${id}`, { token });
    t.equal(one.json.name, `pc-${i + 1}`, "each id reaches its own machine");
  }
  t.equal(router.keptSize, kept, "paths with an id are not kept");
  t.equal((await call(api, "GET", "/api/nothing-here", { token })).status, 404);
  t.equal((await call(api, "GET", "/api/nothing-here", { token })).status, 404, "twice");
});

t.test("the same match as the router under it", async (t) => {
  const add = (r: { add(m: string, p: string, h: string): void }) => {
    r.add("ALL", "*", "mw-all");
    r.add("ALL", "/api/*", "mw-api");
    r.add("GET", "/api/machines", "list");
    r.add("GET", "/api/machines/:id", "one");
    r.add("POST", "/api/sessions/start", "start");
    r.add("POST", "/api/sessions/:session_id/stop", "stop");
  };
  const memo = new MemoRouter<string>(new TrieRouter());
  const plain = new TrieRouter<string>();
  add(memo);
  add(plain);
  const cases: [string, string][] = [
    ["GET", "/api/machines"],
    ["GET", "/api/machines/7"],
    ["POST", "/api/sessions/start"],
    ["POST", "/api/sessions/12/stop"],
    ["GET", "/elsewhere"],
  ];
  for (let round = 0; round < 2; round++) {
    for (const [m, p] of cases) t.same(memo.match(m, p), plain.match(m, p), `${m} ${p}`);
  }
  t.equal(memo.keptSize, 3, "the three paths without parameters");
});

t.test(
  "a route added after a match drops what was kept; the oldest goes beyond the size",
  async (t) => {
    const app = new Hono({ router: new MemoRouter(new TrieRouter()) });
    app.get("/a", (c) => c.text("a"));
    t.equal((await app.request("/b")).status, 404, "no /b yet");
    app.get("/b", (c) => c.text("b"));
    const b = await app.request("/b");
    t.equal(b.status, 200, "/b found once added");
    t.equal(await b.text(), "b");

    const small = new MemoRouter<string>(new TrieRouter(), 2);
    for (const p of ["/x", "/y", "/z"]) small.add("GET", p, p);
    for (const p of ["/x", "/y", "/z"]) t.same(small.match("GET", p)[0][0]?.[0], p);
    t.equal(small.keptSize, 2, "at most its size");
    t.same(small.match("GET", "/x")[0][0]?.[0], "/x", "an entry that went is matched again");
  },
);
