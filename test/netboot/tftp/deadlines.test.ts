// The one sweep that drives every transfer's retransmission and lifetime (deadlines.ts).

import t from "tap";
import { DeadlineSweep, sweepPeriodFor } from "../../../src/netboot/tftp/deadlines.js";
import { sleep } from "./fixtures/helpers.js";

class Member {
  fired: number[] = [];
  constructor(
    public deadline: number,
    private readonly onFire: (m: Member, now: number) => void = () => {},
  ) {}
  onDeadline(now: number): void {
    this.fired.push(now);
    this.onFire(this, now);
  }
}

t.test("a deadline fires once it has passed, never before, and again only if moved", async (t) => {
  const sweep = new DeadlineSweep(10);
  const start = sweep.now();
  const soon = new Member(start + 50, (m) => {
    m.deadline = Number.POSITIVE_INFINITY; // a transfer re-arms or finishes here
  });
  const later = new Member(start + 100_000);
  sweep.add(soon);
  sweep.add(later);
  t.teardown(() => {
    sweep.delete(soon);
    sweep.delete(later);
  });
  await sleep(200);
  t.equal(soon.fired.length, 1, "fired once");
  t.ok(soon.fired[0]! >= start + 50, "not before its deadline");
  t.same(later.fired, [], "a future deadline does not fire");
});

t.test("a member deleted in its own callback leaves the others swept", async (t) => {
  const sweep = new DeadlineSweep(10);
  const now = sweep.now();
  const a = new Member(now, (m) => sweep.delete(m));
  const b = new Member(now, (m) => sweep.delete(m));
  sweep.add(a);
  sweep.add(b);
  await sleep(100);
  t.same([a.fired.length, b.fired.length], [1, 1]);
  t.equal(sweep.size, 0);
});

t.test("the interval runs only while members exist", async (t) => {
  const sweep = new DeadlineSweep(10);
  const m = new Member(Number.POSITIVE_INFINITY);
  const before = process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
  sweep.add(m);
  t.equal(process.getActiveResourcesInfo().filter((r) => r === "Timeout").length, before + 1);
  sweep.delete(m);
  t.equal(
    process.getActiveResourcesInfo().filter((r) => r === "Timeout").length,
    before,
    "no timer left behind",
  );
});

t.test("the period is a tenth of the default timeout, within 10..100 ms", async (t) => {
  t.equal(sweepPeriodFor(1000), 100);
  t.equal(sweepPeriodFor(150), 15);
  t.equal(sweepPeriodFor(20), 10);
  t.equal(sweepPeriodFor(10_000), 100);
});
