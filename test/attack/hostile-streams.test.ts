// One user opening event streams without end: each costs the daemon a subscription, a
// queue and a socket. Before the bound, every stream was accepted (the test got 200 for the
// ninth SSE stream and an open ninth WebSocket).

import t from "tap";
import WebSocket from "ws";
import { addUser, tokenFor } from "../api/helpers.js";
import { openStream, servicesApi } from "../api/services-helpers.js";

const SSE = { accept: "text/event-stream" };

function wsOpen(
  url: string,
  token: string,
): Promise<{ ws: WebSocket } | { status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` } });
    ws.once("open", () => resolve({ ws }));
    ws.once("unexpected-response", (_req, res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        body += d;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    ws.once("error", reject);
  });
}

async function until(cond: () => boolean, what: string, timeoutMs = 10_000) {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

t.test(
  "at most 8 event streams per user, SSE and WebSocket together; the 9th gets 429",
  async (t) => {
    const api = servicesApi(t);
    const { base } = await api.listen();
    const user = await addUser(api, "greedy", "viewer");
    const token = await tokenFor(api, user);
    const auth = { ...SSE, authorization: `Bearer ${token}` };
    const sse = [];
    for (let i = 0; i < 5; i++) {
      const s = await openStream(`${base}/api/events`, auth);
      t.teardown(() => s.close());
      t.equal(s.status, 200, `SSE stream ${i + 1} opens`);
      sse.push(s);
    }
    const wsUrl = `${base.replace("http", "ws")}/api/ws`;
    for (let i = 0; i < 3; i++) {
      const w = await wsOpen(wsUrl, token);
      t.ok("ws" in w, `WebSocket ${i + 1} opens`);
      if ("ws" in w) t.teardown(() => w.ws.terminate());
    }
    const ninth = await fetch(`${base}/api/events`, { headers: auth });
    t.equal(ninth.status, 429, "a ninth SSE stream is refused");
    const body = (await ninth.json()) as { error: string; detail: string; max_streams: number };
    t.equal(body.error, "rate_limit_exceeded");
    t.match(body.detail, /too many event streams: greedy already has 8 open/);
    t.equal(body.max_streams, 8);
    const ninthWs = await wsOpen(wsUrl, token);
    t.ok("status" in ninthWs && ninthWs.status === 429, "a ninth WebSocket is refused with 429");
    if ("ws" in ninthWs) ninthWs.ws.terminate();

    // Someone else is not affected.
    const other = await tokenFor(api, await addUser(api, "other", "viewer"));
    const o = await openStream(`${base}/api/events`, { ...SSE, authorization: `Bearer ${other}` });
    t.teardown(() => o.close());
    t.equal(o.status, 200, "another user still gets a stream");

    // A closed stream gives its slot back.
    sse[0]!.close();
    const events = api.services.events;
    await until(() => events.heldBy(user.id) < 8, "the closed stream's slot to come back");
    const again = await openStream(`${base}/api/events`, auth);
    t.teardown(() => again.close());
    t.equal(again.status, 200, "a new stream once one was closed");
  },
);
