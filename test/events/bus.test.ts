import t from "tap";
import { EventBus } from "../../src/events/bus.js";

const alert = (message: string) => ({ level: "info" as const, source: "test", message });

t.test(
  "events arrive in order with rising ids, a timestamp from the clock, and their payload",
  async (t) => {
    let now = Date.UTC(2025, 0, 1, 12, 0, 0);
    const bus = new EventBus({ clock: () => now });
    const sub = bus.subscribe();
    bus.publish("machine_online", { machine_id: 7, ip_address: "10.0.0.7" });
    now += 1500;
    bus.publish("system_alert", alert("disk low"));
    const a = await sub.next();
    const b = await sub.next();
    t.equal(a?.event.type, "machine_online");
    t.same(a?.event.payload, { machine_id: 7, ip_address: "10.0.0.7" });
    t.equal(a?.event.at, "2025-01-01T12:00:00.000Z");
    t.equal(b?.event.type, "system_alert");
    t.equal(b?.event.at, "2025-01-01T12:00:01.500Z");
    t.equal(b!.event.id, a!.event.id + 1);
    t.equal(a?.droppedBefore, 0);
  },
);

t.test("a waiting consumer is woken by the next publish", async (t) => {
  const bus = new EventBus();
  const sub = bus.subscribe();
  const pending = sub.next();
  setTimeout(() => bus.publish("machine_offline", { machine_id: 3 }), 10);
  const d = await pending;
  t.equal(d?.event.type, "machine_offline");
});

t.test("type lists and filters choose what a subscriber sees", async (t) => {
  const bus = new EventBus();
  const jobsOnly = bus.subscribe({ types: ["job_progress"] });
  const mine = bus.subscribe({
    filter: (e) => e.type === "machine_offline" && e.payload.machine_id === 2,
  });
  bus.publish("machine_offline", { machine_id: 1 });
  bus.publish("machine_offline", { machine_id: 2 });
  bus.publish("job_progress", {
    job_id: 1,
    type: "x",
    status: "running",
    progress: 5,
    step: null,
    message: null,
  });
  t.equal(jobsOnly.queued, 1);
  t.equal((await jobsOnly.next())?.event.type, "job_progress");
  t.equal(mine.queued, 1);
  const d = await mine.next();
  t.same(d?.event.payload, { machine_id: 2 });
});

t.test(
  "a subscriber that never reads holds at most maxQueue events; the rest are counted as dropped",
  async (t) => {
    const bus = new EventBus();
    const slow = bus.subscribe({ maxQueue: 100 });
    const fast = bus.subscribe({ maxQueue: 100_000 });
    const big = "x".repeat(10_000);
    const started = performance.now();
    for (let i = 0; i < 50_000; i++) bus.publish("system_alert", alert(big));
    const elapsed = performance.now() - started;
    t.equal(slow.queued, 100, "queue bounded");
    t.equal(slow.dropped, 49_900);
    t.equal(bus.stats().dropped, 49_900);
    t.equal(fast.queued, 50_000, "a fast subscriber is not affected by the slow one");
    t.ok(elapsed < 5000, `50k publishes with a stalled subscriber took ${elapsed.toFixed(0)} ms`);
    // The first 100 were kept; the gap is reported on the next event accepted after the drops.
    for (let i = 0; i < 100; i++) await slow.next();
    bus.publish("machine_offline", { machine_id: 9 });
    const after = await slow.next();
    t.equal(after?.event.type, "machine_offline");
    t.equal(after?.droppedBefore, 49_900);
    t.equal(after!.event.id, 50_001, "the ids show the gap too");
  },
);

t.test("with overflow=disconnect a slow subscriber is ended and detached", async (t) => {
  const bus = new EventBus();
  const sub = bus.subscribe({ maxQueue: 3, overflow: "disconnect" });
  for (let i = 0; i < 4; i++) bus.publish("machine_offline", { machine_id: i });
  t.equal(sub.closed, true);
  t.equal(sub.endReason, "overflow");
  t.equal(sub.queued, 0, "its queue is freed");
  t.equal(await sub.next(), undefined);
  t.equal(bus.stats().subscribers, 0);
  t.equal(bus.stats().disconnected, 1);
});

t.test("a throwing listener does not reach the publisher or the other listeners", async (t) => {
  const errors: unknown[] = [];
  const bus = new EventBus({ onListenerError: (err) => errors.push(err) });
  const seen: number[] = [];
  bus.on(() => {
    throw new Error("boom");
  });
  const off = bus.on((e) => seen.push(e.id));
  bus.publish("machine_offline", { machine_id: 1 });
  off();
  bus.publish("machine_offline", { machine_id: 2 });
  t.same(seen, [1]);
  t.equal(errors.length, 2);
  t.equal(bus.stats().listenerErrors, 2);
});

t.test(
  "close ends a waiting next(), async iteration stops, and an abort signal frees the waiter",
  async (t) => {
    const bus = new EventBus();
    const sub = bus.subscribe();
    const waiting = sub.next();
    sub.close();
    t.equal(await waiting, undefined);
    t.equal(bus.stats().subscribers, 0);

    const it = bus.subscribe();
    const got: number[] = [];
    const loop = (async () => {
      for await (const d of it) {
        got.push(d.event.id);
        if (got.length === 2) break;
      }
    })();
    bus.publish("machine_offline", { machine_id: 1 });
    bus.publish("machine_offline", { machine_id: 2 });
    bus.publish("machine_offline", { machine_id: 3 });
    await loop;
    t.equal(got.length, 2);
    t.equal(it.closed, true, "breaking out of for-await closes the subscription");

    const s3 = bus.subscribe();
    const ac = new AbortController();
    const p = s3.next(ac.signal);
    ac.abort();
    t.equal(await p, undefined);
    bus.publish("machine_offline", { machine_id: 4 });
    t.equal(s3.queued, 1, "after an aborted wait the event is queued, not lost to a stale waiter");
    bus.closeAll();
    t.equal(bus.stats().subscribers, 0);
  },
);
