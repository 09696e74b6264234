import t from "tap";
import { SharedLock } from "../../src/lib/shared-lock.js";

function gate() {
  let open!: () => void;
  const opened = new Promise<void>((r) => {
    open = r;
  });
  return { open, opened };
}

const tick = () => new Promise((r) => setImmediate(r));

t.test("shared tasks run together; an exclusive one waits for them and runs alone", async (t) => {
  const lock = new SharedLock();
  const order: string[] = [];
  const g1 = gate();
  const g2 = gate();
  const s1 = lock.shared(async () => {
    order.push("s1 start");
    await g1.opened;
    order.push("s1 end");
  });
  const s2 = lock.shared(async () => {
    order.push("s2 start");
    await g2.opened;
    order.push("s2 end");
  });
  const x = lock.exclusive(async () => {
    order.push("x");
  });
  await tick();
  t.same(order, ["s1 start", "s2 start"], "both shared tasks started; the exclusive one waits");
  g1.open();
  await s1;
  await tick();
  t.same(order, ["s1 start", "s2 start", "s1 end"], "still waiting for s2");
  g2.open();
  await Promise.all([s2, x]);
  t.same(order, ["s1 start", "s2 start", "s1 end", "s2 end", "x"]);
});

t.test("a shared task asked after a waiting exclusive one waits for it", async (t) => {
  const lock = new SharedLock();
  const order: string[] = [];
  const g = gate();
  const s1 = lock.shared(async () => {
    order.push("s1");
    await g.opened;
  });
  const x = lock.exclusive(async () => {
    order.push("x start");
    await tick();
    order.push("x end");
  });
  const s2 = lock.shared(async () => {
    order.push("s2");
  });
  await tick();
  t.same(order, ["s1"], "s2 did not slip in ahead of the exclusive task");
  g.open();
  await Promise.all([s1, x, s2]);
  t.same(order, ["s1", "x start", "x end", "s2"]);
});

t.test("a failed task releases the lock, and its caller sees the failure", async (t) => {
  const lock = new SharedLock();
  await t.rejects(
    lock.exclusive(async () => {
      throw new Error("boom");
    }),
    /boom/,
  );
  await t.rejects(
    lock.shared(async () => {
      throw new Error("bang");
    }),
    /bang/,
  );
  t.equal(await lock.exclusive(async () => "ran"), "ran");
});
