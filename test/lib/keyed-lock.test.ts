import t from "tap";
import { errorText } from "../../src/lib/error-text.js";
import { KeyedLock, Serial } from "../../src/lib/keyed-lock.js";

function gate() {
  let open!: () => void;
  const opened = new Promise<void>((r) => {
    open = r;
  });
  return { open, opened };
}

t.test("one key runs one task at a time, in order; other keys do not wait", async (t) => {
  const lock = new KeyedLock<number>();
  const order: string[] = [];
  const g = gate();
  const first = lock.run(1, async () => {
    order.push("1a start");
    await g.opened;
    order.push("1a end");
  });
  const second = lock.run(1, async () => {
    order.push("1b");
  });
  await lock.run(2, async () => {
    order.push("2");
  });
  t.same(order, ["1a start", "2"], "key 2 ran while key 1 was busy; 1b waited");
  g.open();
  await Promise.all([first, second]);
  t.same(order, ["1a start", "2", "1a end", "1b"]);
});

t.test("a failed task does not block the next one, and its caller sees the failure", async (t) => {
  const lock = new KeyedLock();
  const failed = lock.run("k", async () => {
    throw new Error("boom");
  });
  const next = lock.run("k", async () => "ran");
  await t.rejects(failed, /boom/);
  t.equal(await next, "ran");
});

t.test("Serial is one queue for everything", async (t) => {
  const serial = new Serial();
  const order: number[] = [];
  const g = gate();
  const a = serial.run(async () => {
    await g.opened;
    order.push(1);
  });
  const b = serial.run(async () => {
    order.push(2);
  });
  g.open();
  await Promise.all([a, b]);
  t.same(order, [1, 2]);
});

t.test("errorText: an Error's message, anything else as a string", async (t) => {
  t.equal(errorText(new TypeError("bad")), "bad");
  t.equal(errorText("plain"), "plain");
  t.equal(errorText(42), "42");
});
