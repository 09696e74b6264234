// The proxy-DHCP's send queue alone, on a stand-in socket and a clock the test moves: what
// leaves at once, what the pacing budget holds back, and what a full socket buffer costs.
import { pino } from "pino";
import t from "tap";
import { type SendChannel, type SendJob, SendQueue } from "../../../src/netboot/dhcp/send-queue.js";

const log = pino({ level: "silent" });

function rig(opts: { burst: number; intervalMs: number; maxQueued?: number }) {
  let clock = 0;
  const sent: number[] = [];
  const failures: Error[] = [];
  const channel: SendChannel = {
    open: true,
    sendNow: (packet) => {
      const err = failures.shift();
      if (err) throw err;
      sent.push(packet[0]!);
    },
  };
  const stats = { sent: 0, sendErrors: 0, queueFull: 0 };
  const queue = new SendQueue({
    intervalMs: opts.intervalMs,
    burst: opts.burst,
    maxQueued: opts.maxQueued ?? 100,
    log,
    stats,
    now: () => clock,
  });
  const results: (boolean | undefined)[] = [];
  const push = (i: number) => {
    results[i] = undefined;
    const job: SendJob = {
      channel,
      packet: Buffer.from([i]),
      dstAddress: "255.255.255.255",
      label: () => `job ${i}`,
      resolve: (ok) => {
        results[i] = ok;
      },
    };
    return queue.push(job);
  };
  /** Waits (real time, bounded) until `sent` reaches n; the count is what is asserted. */
  const until = async (n: number) => {
    const deadline = Date.now() + 10_000;
    while (sent.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  };
  return {
    sent,
    failures,
    stats,
    results,
    push,
    until,
    queue,
    advance: (ms: number) => {
      clock += ms;
    },
  };
}

t.test("within the budget a reply leaves before push returns", async (t) => {
  const r = rig({ burst: 4, intervalMs: 10 });
  for (let i = 0; i < 4; i++) {
    t.ok(r.push(i), `job ${i} accepted`);
    t.equal(r.sent.length, i + 1, `job ${i} handed to the socket in the same turn`);
    t.equal(r.results[i], true, `job ${i} resolved sent`);
  }
  t.equal(r.stats.sent, 4);
});

t.test("beyond the burst, replies wait for the clock, never more than it allows", async (t) => {
  const r = rig({ burst: 4, intervalMs: 10 });
  for (let i = 0; i < 10; i++) r.push(i);
  t.equal(r.sent.length, 4, "the burst left at once");
  // The clock stands still: however often the pump wakes, no token comes.
  await new Promise((res) => setTimeout(res, 50));
  t.equal(r.sent.length, 4, "nothing more while no time passed");
  r.advance(5); // half an interval: 2 tokens
  await r.until(6);
  await new Promise((res) => setTimeout(res, 30));
  t.equal(r.sent.length, 6, "two more after half an interval");
  r.advance(1000); // a long wait refills the bucket only up to the burst
  await r.until(10);
  t.same(r.sent, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "all left, in order");
  t.same(r.results, Array(10).fill(true), "every job resolved sent");
});

t.test("a full socket buffer is waited out; a real error is reported", async (t) => {
  const r = rig({ burst: 8, intervalMs: 0 });
  r.failures.push(new Error("Resource temporarily unavailable"));
  r.push(0);
  t.equal(r.sent.length, 0, "EAGAIN: not sent yet");
  t.equal(r.results[0], undefined, "and not given up");
  r.push(1);
  await r.until(2);
  t.same(r.sent, [0, 1], "sent once the buffer drained, still in order");
  t.same(r.results, [true, true]);
  r.failures.push(new Error("Network is unreachable"));
  r.push(2);
  t.equal(r.results[2], false, "a non-transient error fails the job at once");
  t.equal(r.stats.sendErrors, 1, "and is counted");
});

t.test("a full queue refuses, and drain reports what did not leave", async (t) => {
  // The job the pump holds is not counted: 1 held, 2 queued.
  const r = rig({ burst: 1, intervalMs: 1000, maxQueued: 2 });
  t.ok(r.push(0), "the first leaves");
  t.ok(r.push(1) && r.push(2) && r.push(3), "three wait");
  t.notOk(r.push(4), "the fifth is refused");
  t.equal(r.stats.queueFull, 1);
  await r.queue.drain(20);
  t.same(r.results, [true, false, false, false, undefined], "the waiting ones are not sent");
  r.advance(10_000);
  await new Promise((res) => setTimeout(res, 1100));
  t.same(r.sent, [0], "nothing reported unsent leaves later");
});
