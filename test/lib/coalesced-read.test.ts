import t from "tap";
import { CoalescedRead } from "../../src/lib/coalesced-read.js";

function gate() {
  let open!: () => void;
  const opened = new Promise<void>((r) => {
    open = r;
  });
  return { open, opened };
}

t.test("callers asking together share one read", async (t) => {
  let reads = 0;
  const r = new CoalescedRead(async () => ++reads);
  const got = await Promise.all([r.get(), r.get(), r.get()]);
  t.same(got, [1, 1, 1]);
  t.equal(reads, 1);
  t.equal(await r.get(), 2, "a later caller gets a read of its own");
});

t.test("a caller asking while a read runs gets the next read, never the running one", async (t) => {
  let state = "old";
  const g = gate();
  let reads = 0;
  const r = new CoalescedRead(async () => {
    reads++;
    const seen = state;
    if (reads === 1) await g.opened;
    return seen;
  });
  const first = r.get();
  await new Promise((res) => setImmediate(res));
  t.equal(reads, 1, "the first read is under way");
  state = "new"; // changed after the first read was sent
  const second = r.get();
  const third = r.get();
  g.open();
  t.equal(await first, "old");
  t.equal(await second, "new", "the caller who asked later sees the change");
  t.equal(await third, "new");
  t.equal(reads, 2, "the two later callers shared the second read");
});

t.test("a failed read reaches every caller that shared it, and the next read runs", async (t) => {
  let reads = 0;
  const r = new CoalescedRead(async () => {
    reads++;
    if (reads === 1) throw new Error("down");
    return "up";
  });
  const [a, b] = await Promise.allSettled([r.get(), r.get()]);
  t.equal(a.status, "rejected");
  t.equal(b.status, "rejected");
  t.equal(await r.get(), "up");
});
