import t from "tap";
import { EventBus } from "../../src/events/bus.js";
import { runChecked } from "../../src/host/exec.js";
import { JobRunner, type JobStep, parseSteps } from "../../src/jobs/runner.js";
import { deferred, silent, tempStore, until } from "./helpers.js";

function progressEvents(bus: EventBus) {
  const seen: { job_id: number; status: string; progress: number; step: string | null }[] = [];
  bus.on((e) => {
    if (e.type === "job_progress") seen.push(e.payload);
  });
  return seen;
}

t.test(
  "a job goes queued → running → succeeded, with its steps, log, progress and result stored",
  async (t) => {
    const { store } = tempStore(t, "jobs");
    const bus = new EventBus();
    const events = progressEvents(bus);
    const runner = new JobRunner({ store, bus, log: silent });
    runner.register("demo", async (params, ctx) => {
      await ctx.step("first", async () => ctx.progress(40, "first half done"));
      await ctx.step("second", async () => ctx.progress(90));
      ctx.skip("third", "not needed");
      return { echoed: params };
    });
    const job = runner.submit("demo", { n: 1 }, { steps: ["first", "second", "third", "fourth"] });
    t.equal(job.status, "queued");
    t.same(
      parseSteps(job.steps).map((s) => s.status),
      ["pending", "pending", "pending", "pending"],
      "the plan is visible before it runs",
    );
    const done = await runner.wait(job.id, 5000);
    t.equal(done.status, "succeeded");
    t.equal(done.progress, 100);
    t.same(JSON.parse(done.result!), { echoed: { n: 1 } });
    t.ok(done.started_at && done.finished_at);
    const steps = parseSteps(done.steps) as JobStep[];
    t.same(
      steps.map((s) => [s.name, s.status]),
      [
        ["first", "succeeded"],
        ["second", "succeeded"],
        ["third", "skipped"],
        ["fourth", "skipped"],
      ],
    );
    t.ok(steps[0]!.started_at && steps[0]!.ended_at);
    const logs = store.jobs.logs(job.id).map((l) => l.message);
    t.ok(logs.includes("first half done"));
    t.ok(logs.includes("step second succeeded"));
    const statuses = events.filter((e) => e.job_id === job.id).map((e) => e.status);
    t.equal(statuses[0], "queued");
    t.ok(statuses.includes("running"));
    t.equal(statuses.at(-1), "succeeded");
    t.ok(
      events.some((e) => e.progress === 40 && e.step === "first"),
      "progress events name the step",
    );
  },
);

t.test("progress is stored and published at most once per whole percent", async (t) => {
  const { store } = tempStore(t, "jobs");
  const bus = new EventBus();
  const events = progressEvents(bus);
  const runner = new JobRunner({ store, bus, log: silent });
  runner.register("chatty", async (_p, ctx) => {
    for (let i = 0; i <= 10_000; i++) ctx.progress(i / 100);
  });
  const job = runner.submit("chatty");
  await runner.wait(job.id, 5000);
  const running = events.filter((e) => e.job_id === job.id && e.status === "running");
  t.ok(running.length <= 102, `${running.length} running events for 10001 progress calls`);
  t.ok(running.length >= 100, "but every percent is seen");
});

t.test("no more than `concurrency` jobs run at once; the rest wait in order", async (t) => {
  const { store } = tempStore(t, "jobs");
  const runner = new JobRunner({ store, log: silent, concurrency: 2 });
  const gates = new Map<number, ReturnType<typeof deferred<void>>>();
  const startOrder: number[] = [];
  let maxRunning = 0;
  runner.register("gated", async (_p, ctx) => {
    startOrder.push(ctx.id);
    maxRunning = Math.max(maxRunning, store.jobs.count("status = 'running'"));
    const g = deferred();
    gates.set(ctx.id, g);
    await g.promise;
  });
  const ids = [1, 2, 3, 4, 5].map(() => runner.submit("gated").id);
  await until(() => gates.size === 2, 2000, "two jobs started");
  t.equal(runner.runningCount, 2);
  t.equal(store.jobs.count("status = 'queued'"), 3);
  const deadline = Date.now() + 5000;
  while ((startOrder.length < 5 || gates.size) && Date.now() < deadline) {
    const first = gates.entries().next();
    if (!first.done) {
      gates.delete(first.value[0]);
      first.value[1].resolve();
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  for (const id of ids) t.equal((await runner.wait(id, 5000)).status, "succeeded");
  t.equal(maxRunning, 2, "the database never showed more than two running");
  t.same(startOrder, ids, "jobs start in the order they were submitted");
});

t.test(
  "a failing job is failed with the reason; its running step is failed, the rest skipped",
  async (t) => {
    const { store } = tempStore(t, "jobs");
    const runner = new JobRunner({ store, log: silent });
    runner.register("bad", async (_p, ctx) => {
      await ctx.step("a", async () => {});
      await ctx.step("b", async () => {
        throw new Error("disk on fire");
      });
    });
    const job = runner.submit("bad", {}, { steps: ["a", "b", "c"] });
    const done = await runner.wait(job.id, 5000);
    t.equal(done.status, "failed");
    t.equal(done.error, "disk on fire");
    const steps = parseSteps(done.steps);
    t.same(
      steps.map((s) => s.status),
      ["succeeded", "failed", "skipped"],
    );
    t.equal(steps[1]!.message, "disk on fire");
    t.ok(store.jobs.logs(job.id).some((l) => l.level === "error" && l.message === "disk on fire"));
  },
);

t.test("cancelling a queued job ends it at once and it never runs", async (t) => {
  const { store } = tempStore(t, "jobs");
  const runner = new JobRunner({ store, log: silent, concurrency: 1 });
  const gate = deferred();
  let ran = 0;
  runner.register("w", async () => {
    ran++;
    await gate.promise;
  });
  const first = runner.submit("w");
  const second = runner.submit("w");
  await until(() => ran === 1, 2000, "first job running");
  t.equal(runner.cancel(second.id), "cancelled");
  t.equal(store.jobs.get(second.id)?.status, "cancelled");
  gate.resolve();
  await runner.wait(first.id, 5000);
  await new Promise((r) => setTimeout(r, 20));
  t.equal(ran, 1, "the cancelled job did not start");
  t.equal(runner.cancel(first.id), "finished");
  t.equal(runner.cancel(99_999), "not_found");
});

t.test("cancelling a running job kills its child process and ends it cancelled", async (t) => {
  const { store } = tempStore(t, "jobs");
  const runner = new JobRunner({ store, log: silent });
  let pid: number | undefined;
  runner.register("sleepy", async (_p, ctx) => {
    await ctx.step("sleep", async () => {
      // The shell prints its own pid so the test can check that the process is gone.
      await runChecked("sh", ["-c", "echo $$; exec sleep 30"], {
        signal: ctx.signal,
        onStdout: (s) => {
          pid ??= Number.parseInt(s, 10);
        },
      });
    });
  });
  const job = runner.submit("sleepy", {}, { steps: ["sleep", "after"] });
  await until(() => pid !== undefined, 5000, "child started");
  const started = Date.now();
  t.equal(runner.cancel(job.id), "cancelling");
  const done = await runner.wait(job.id, 10_000);
  t.equal(done.status, "cancelled");
  t.ok(Date.now() - started < 6000, "cancel took effect without waiting for the sleep");
  t.throws(() => process.kill(pid!, 0), { code: "ESRCH" }, "the child process is gone");
  t.same(
    parseSteps(done.steps).map((s) => s.status),
    ["cancelled", "cancelled"],
  );
});

t.test(
  "after a restart no job is left running; queued jobs of known types run again",
  async (t) => {
    const { store } = tempStore(t, "jobs");
    const before = new JobRunner({ store, log: silent, concurrency: 1 });
    // Its work never finishes: the old process "dies" with the job running.
    before.register("x", () => new Promise(() => {}));
    const running = before.submit("x");
    const queued = before.submit("x");
    await until(() => store.jobs.get(running.id)?.status === "running", 2000, "job running");
    const orphan = store.jobs.create("retired-type");
    // The old process dies here: its runner is simply abandoned.

    const after = new JobRunner({ store, log: silent });
    let reran = 0;
    after.register("x", async () => {
      reran++;
    });
    const r = after.recover();
    t.same(r.failed.sort(), [running.id, orphan.id].sort());
    t.same(r.requeued, [queued.id]);
    t.equal(store.jobs.get(running.id)?.status, "failed");
    t.match(store.jobs.get(running.id)?.error, /interrupted/);
    t.equal((await after.wait(queued.id, 5000)).status, "succeeded");
    t.equal(reran, 1);
    t.equal(store.jobs.count("status = 'running'"), 0);
  },
);

t.test("stop() aborts running jobs and no new job starts", async (t) => {
  const { store } = tempStore(t, "jobs");
  const runner = new JobRunner({ store, log: silent, concurrency: 1 });
  runner.register("loop", async (_p, ctx) => {
    while (true) {
      ctx.throwIfCancelled();
      await new Promise((r) => setTimeout(r, 5));
    }
  });
  const a = runner.submit("loop");
  const b = runner.submit("loop");
  await until(() => runner.runningCount === 1, 2000, "job running");
  await runner.stop(5000);
  t.equal(store.jobs.get(a.id)?.status, "cancelled");
  t.equal(store.jobs.get(b.id)?.status, "queued", "left queued for the next start");
  t.throws(() => runner.submit("loop"), /stopped/);
});
