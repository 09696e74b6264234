import { connect } from "node:net";
import t from "tap";
import WebSocket from "ws";
import { addUser, call, tokenFor } from "./helpers.js";
import { openStream, parseSse, servicesApi } from "./services-helpers.js";

const SSE = { accept: "text/event-stream" };

/** Messages of a WebSocket, and how it ended. */
function wsClient(url: string, headers: Record<string, string> = {}) {
  const ws = new WebSocket(url, { headers });
  const messages: { id: number; type: string; payload: Record<string, unknown> }[] = [];
  ws.on("message", (data) => messages.push(JSON.parse(String(data))));
  const opened = new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("unexpected-response", (_req, res) =>
      reject(Object.assign(new Error(`refused: ${res.statusCode}`), { status: res.statusCode })),
    );
    ws.once("error", reject);
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.once("close", (code, reason) => resolve({ code, reason: String(reason) })),
  );
  return { ws, messages, opened, closed };
}

async function until(cond: () => boolean, what: string, timeoutMs = 10_000) {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

t.test("SSE: image_uploaded after an upload, then the import job's job_progress", async (t) => {
  const api = servicesApi(t);
  const { base } = await api.listen();
  const token = await tokenFor(api, await addUser(api, "ev-admin", "admin"));
  const stream = await openStream(`${base}/api/events`, {
    ...SSE,
    authorization: `Bearer ${token}`,
  });
  t.teardown(() => stream.close());
  t.equal(stream.status, 200);
  t.match(stream.headers["content-type"], /^text\/event-stream/);
  await stream.waitFor(/bootfleet events/);

  const form = new FormData();
  form.set("file", new Blob([Buffer.alloc(1 << 20, 7)]), "tiny.raw");
  form.set("name", "tiny");
  const up = await fetch(`${base}/api/images/upload`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}` },
    body: form,
  });
  const image = (await up.json()) as { id: number; job_id: number };
  t.equal(up.status, 201);
  await stream.waitFor(/"status":"succeeded"/);
  const events = parseSse(stream.text());
  const uploaded = events.find((e) => e.event === "image_uploaded");
  t.ok(uploaded, "image_uploaded arrived");
  const msg = JSON.parse(uploaded!.data);
  t.equal(msg.type, "image_uploaded");
  t.equal(msg.payload.image_id, image.id);
  t.equal(msg.payload.name, "tiny");
  t.equal(msg.payload.job_id, image.job_id);
  t.equal(String(msg.id), uploaded!.id, "the SSE id is the event id (for Last-Event-ID)");
  const progress = events
    .filter((e) => e.event === "job_progress")
    .map((e) => JSON.parse(e.data).payload);
  t.ok(progress.length >= 3, `${progress.length} job_progress events`);
  t.ok(progress.every((p) => p.job_id === image.job_id));
  t.equal(progress.at(-1).status, "succeeded");
  t.equal(progress.at(-1).progress, 100);
  const ids = events.map((e) => Number(e.id));
  t.same(
    ids,
    [...ids].sort((a, b) => a - b),
    "ids rise",
  );
});

t.test(
  "SSE and WebSocket take ?token= for browsers; refused without a token; the token is never logged",
  async (t) => {
    const api = servicesApi(t);
    const { base } = await api.listen();
    const token = await tokenFor(api, await addUser(api, "q-admin", "admin"));

    const anon = await fetch(`${base}/api/events`, { headers: SSE });
    t.equal(anon.status, 401);
    t.equal(((await anon.json()) as { error: string }).error, "authentication_error");
    const forged = await fetch(`${base}/api/events?token=${token.slice(0, -4)}AAAA`, {
      headers: SSE,
    });
    t.equal(forged.status, 401, "a forged query token is refused");

    const stream = await openStream(`${base}/api/events?token=${token}`, SSE);
    t.teardown(() => stream.close());
    t.equal(stream.status, 200);
    await stream.waitFor(/bootfleet events/);

    const refused = wsClient(`${base.replace("http", "ws")}/api/ws`);
    await t.rejects(refused.opened, { message: "refused: 401" }, "WebSocket without a token: 401");
    const bad = wsClient(`${base.replace("http", "ws")}/api/ws?token=not.a.token`);
    await t.rejects(bad.opened, { message: "refused: 401" }, "WebSocket with a bad token: 401");

    const viaQuery = wsClient(`${base.replace("http", "ws")}/api/ws?token=${token}`);
    const viaHeader = wsClient(`${base.replace("http", "ws")}/api/ws`, {
      authorization: `Bearer ${token}`,
    });
    await Promise.all([viaQuery.opened, viaHeader.opened]);
    t.teardown(() => {
      viaQuery.ws.terminate();
      viaHeader.ws.terminate();
    });
    await until(() => api.services.events.open === 3, "three streams subscribed");
    api.bus.publish("system_alert", { level: "warning", source: "test", message: "hello" });
    api.bus.publish("machine_offline", { machine_id: 42 });
    await until(
      () => viaQuery.messages.length >= 2 && viaHeader.messages.length >= 2,
      "both sockets receive",
    );
    for (const c of [viaQuery, viaHeader]) {
      t.same(
        c.messages.map((m) => [m.type, m.payload]),
        [
          ["system_alert", { level: "warning", source: "test", message: "hello" }],
          ["machine_offline", { machine_id: 42 }],
        ],
      );
    }
    await stream.waitFor(/machine_offline/);
    t.notOk(
      api.logLines.some((l) => l.includes(token)),
      "no log line carries the token",
    );
  },
);

t.test("a client sees only the events of its own machines", async (t) => {
  const api = servicesApi(t);
  const { base } = await api.listen();
  const admin = await tokenFor(api, await addUser(api, "own-admin", "admin"));
  const alice = await addUser(api, "alice", "client");
  const aliceToken = await tokenFor(api, alice);
  const mk = async (name: string, mac: string, owner: number | null) =>
    (
      await call(api, "POST", "/api/machines", {
        token: admin,
        body: { name, mac_address: mac, owner_user_id: owner },
      })
    ).json.id as number;
  const mine = await mk("alice-pc", "52:54:00:00:00:01", alice.id);
  const other = await mk("bob-pc", "52:54:00:00:00:02", null);

  const sse = await openStream(`${base}/api/events?token=${aliceToken}`, SSE);
  t.teardown(() => sse.close());
  const ws = wsClient(`${base.replace("http", "ws")}/api/ws?token=${aliceToken}`);
  await ws.opened;
  t.teardown(() => ws.ws.terminate());
  await until(() => api.services.events.open === 2, "subscribed");

  api.bus.publish("machine_online", { machine_id: other, ip_address: "10.0.0.2" });
  api.bus.publish("image_uploaded", {
    image_id: 1,
    name: "x",
    format: "raw",
    size_bytes: 1,
    status: "processing",
    job_id: 1,
  });
  api.bus.publish("system_alert", { level: "info", source: "t", message: "m" });
  api.bus.publish("session_started", {
    session_id: "s-1",
    machine_id: other,
    target_id: null,
    client_ip: null,
  });
  api.bus.publish("machine_online", { machine_id: mine, ip_address: "10.0.0.1" });
  await until(() => ws.messages.length >= 1, "alice's event");
  await sse.waitFor(/machine_online/);
  // One more of hers, so anything wrongly let through before it would have arrived.
  api.bus.publish("machine_offline", { machine_id: mine });
  await until(() => ws.messages.length >= 2, "alice's second event");
  await sse.waitFor(/machine_offline/);
  t.same(
    ws.messages.map((m) => [m.type, m.payload.machine_id]),
    [
      ["machine_online", mine],
      ["machine_offline", mine],
    ],
  );
  t.same(
    parseSse(sse.text()).map((e) => [e.event, JSON.parse(e.data).payload.machine_id]),
    [
      ["machine_online", mine],
      ["machine_offline", mine],
    ],
  );
  const recent = await call(api, "GET", "/api/events", { token: aliceToken });
  t.same(
    recent.json.map((e: { type: string }) => e.type),
    ["machine_online", "machine_offline"],
    "the JSON list is filtered the same way",
  );
  const all = await call(api, "GET", "/api/events", { token: admin });
  t.equal(all.json.length, 6, "an admin sees every event");
});

t.test("SSE resumes after Last-Event-ID from the recent events", async (t) => {
  const api = servicesApi(t);
  const { base } = await api.listen();
  const token = await tokenFor(api, await addUser(api, "re-admin", "admin"));
  const first = api.bus.publish("machine_offline", { machine_id: 1 });
  api.bus.publish("machine_offline", { machine_id: 2 });
  api.bus.publish("machine_offline", { machine_id: 3 });
  const stream = await openStream(`${base}/api/events`, {
    ...SSE,
    authorization: `Bearer ${token}`,
    "last-event-id": String(first.id),
  });
  t.teardown(() => stream.close());
  await stream.waitFor(/"machine_id":3/);
  api.bus.publish("machine_offline", { machine_id: 4 });
  await stream.waitFor(/"machine_id":4/);
  t.same(
    parseSse(stream.text()).map((e) => JSON.parse(e.data).payload.machine_id),
    [2, 3, 4],
    "the two missed events, then live ones, none twice",
  );
  const polled = await call(api, "GET", `/api/events?after=${first.id}&limit=1`, { token });
  t.same(
    polled.json.map((e: { payload: { machine_id: number } }) => e.payload.machine_id),
    [2],
  );
  const typed = await call(api, "GET", "/api/events?types=nothing_like_it", { token });
  t.equal(typed.status, 422);
  t.equal(typed.json.field, "types");
});

t.test("a client that stops reading is disconnected, not buffered without bound", async (t) => {
  const api = servicesApi(t, { maxQueue: 16 });
  const { base, server } = await api.listen();
  const token = await tokenFor(api, await addUser(api, "slow-admin", "admin"));
  const port = Number(new URL(base).port);

  // SSE over a raw socket that never reads a byte.
  const sock = connect(port, "127.0.0.1");
  t.teardown(() => sock.destroy());
  await new Promise<void>((r) => sock.once("connect", () => r()));
  sock.pause();
  sock.write(
    `GET /api/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nAuthorization: Bearer ${token}\r\n\r\n`,
  );
  // A WebSocket whose socket is paused once open.
  const ws = wsClient(`${base.replace("http", "ws")}/api/ws?token=${token}`);
  await ws.opened;
  (ws.ws as unknown as { _socket: { pause(): void } })._socket.pause();
  t.teardown(() => ws.ws.terminate());
  await until(() => api.services.events.open === 2, "both subscribed");

  const message = "x".repeat(64 * 1024);
  let published = 0;
  // 64 KiB events until both are cut off; bounded so a failure cannot run forever.
  while (api.services.events.open > 0 && published < 4000) {
    api.bus.publish("system_alert", { level: "info", source: "flood", message });
    published++;
    if (published % 16 === 0) await new Promise((r) => setTimeout(r, 5));
  }
  await until(() => api.services.events.open === 0, "both streams released", 5000);
  const stats = api.bus.stats();
  t.equal(stats.subscribers, 0, "no subscription left on the bus");
  t.equal(stats.disconnected, 2, "both were disconnected for overflow");
  t.ok(
    published * message.length > 8 * 16 * message.length,
    `cut off after ${published} events (${(published * 64) / 1024} MiB published)`,
  );
  (ws.ws as unknown as { _socket: { resume(): void } })._socket.resume();
  const closed = await ws.closed;
  // 1013 when the close frame gets through the full socket, 1006 when it was cut first.
  t.ok([1013, 1006].includes(closed.code), `the WebSocket was closed (${closed.code})`);
  t.equal(server.inFlight(), 0, "the SSE response has ended");
});

t.test("closing the streams at shutdown ends SSE and WebSocket clients at once", async (t) => {
  const api = servicesApi(t);
  const { base } = await api.listen();
  const token = await tokenFor(api, await addUser(api, "sd-admin", "admin"));
  const sse = await openStream(`${base}/api/events?token=${token}`, SSE);
  const ws = wsClient(`${base.replace("http", "ws")}/api/ws?token=${token}`);
  await ws.opened;
  await until(() => api.services.events.open === 2, "both subscribed");
  const started = Date.now();
  api.services.events.closeAll();
  await sse.ended;
  const closed = await ws.closed;
  t.equal(closed.code, 1001, "going away");
  t.ok(Date.now() - started < 2000, `ended in ${Date.now() - started} ms`);
  const late = await fetch(`${base}/api/events`, {
    headers: { ...SSE, authorization: `Bearer ${token}` },
  });
  t.equal(late.status, 503, "no new stream once shut down");
});

t.test("a logout ends the streams at the next heartbeat", async (t) => {
  const api = servicesApi(t, { heartbeatMs: 200 });
  const { base } = await api.listen();
  const user = await addUser(api, "lo-admin", "admin");
  const token = await tokenFor(api, user);
  const sse = await openStream(`${base}/api/events?token=${token}`, SSE);
  t.teardown(() => sse.close());
  const ws = wsClient(`${base.replace("http", "ws")}/api/ws?token=${token}`);
  await ws.opened;
  t.teardown(() => ws.ws.terminate());
  await sse.waitFor(/: ping/, 3000);
  t.equal((await call(api, "POST", "/api/auth/logout", { token })).status, 200);
  const started = Date.now();
  await sse.ended;
  const closed = await ws.closed;
  t.equal(closed.code, 4001);
  t.match(closed.reason, /expired or revoked/);
  t.ok(Date.now() - started < 2000, `ended ${Date.now() - started} ms after the logout`);
});

t.test("without Upgrade, /api/ws says how to connect", async (t) => {
  const api = servicesApi(t);
  const token = await tokenFor(api, await addUser(api, "d-viewer", "viewer"));
  const r = await call(api, "GET", "/api/ws", { token });
  t.equal(r.status, 200);
  t.equal(r.json.websocket, "/api/ws");
  t.ok(r.json.event_types.includes("job_progress"));
});
