import type { Logger } from "pino";
import type { EventBus } from "../events/bus.js";
import { errorText } from "../lib/error-text.js";
import type { Store } from "../store/index.js";
import type { Job, JobLog, JobStatus, JobsRepo } from "../store/jobs.js";

export type StepStatus = "pending" | "running" | "succeeded" | "failed" | "skipped" | "cancelled";

/** One named step of a job, stored as JSON in jobs.steps (GoldenPipe's build steps). */
export interface JobStep {
  name: string;
  status: StepStatus;
  message?: string;
  started_at?: string;
  ended_at?: string;
}

export interface JobContext {
  readonly id: number;
  /** Aborted when the job is cancelled or the runner stops: the work checks it. */
  readonly signal: AbortSignal;
  /** Percent of the whole job, 0..100; stored and published at most once per percent. */
  progress(percent: number, message?: string): void;
  /** Runs one named step, marking it running, then succeeded or failed. */
  step<T>(name: string, fn: () => Promise<T>): Promise<T>;
  /** Marks a declared step as not needed (e.g. no conversion for a raw image). */
  skip(name: string, message?: string): void;
  log(level: JobLog["level"], message: string): void;
  /** Throws the abort reason if the job was cancelled: a cheap check between chunks of work. */
  throwIfCancelled(): void;
}

export type JobHandler = (params: unknown, ctx: JobContext) => Promise<unknown>;

/** The job was cancelled; thrown by throwIfCancelled and recognised by the runner. */
export class JobCancelled extends Error {
  override name = "JobCancelled";
  constructor() {
    super("cancelled");
  }
}

export interface JobRunnerOptions {
  store: Store;
  log: Logger;
  bus?: EventBus;
  /** Jobs running at once; the rest wait in order of submission. */
  concurrency?: number;
  clock?: () => number;
}

export interface SubmitOptions {
  createdBy?: number | null;
  /** Steps shown as pending from the start, so a client sees the whole plan. */
  steps?: readonly string[];
}

export type CancelOutcome = "cancelled" | "cancelling" | "finished" | "not_found";

interface Active {
  controller: AbortController;
  done: Promise<void>;
}

const FINAL: ReadonlySet<JobStatus> = new Set(["succeeded", "failed", "cancelled"]);

/**
 * Runs long work (image conversion, overlay resets, cleanup) as rows of the jobs table, so
 * its status, progress, steps and log survive in the store and can be read through the API.
 * Work is cancelled cooperatively through an AbortSignal; at most `concurrency` jobs run.
 */
export class JobRunner {
  readonly #store: Store;
  readonly #jobs: JobsRepo;
  readonly #log: Logger;
  readonly #bus: EventBus | undefined;
  readonly #concurrency: number;
  readonly #clock: () => number;
  readonly #handlers = new Map<string, JobHandler>();
  readonly #queue: number[] = [];
  readonly #active = new Map<number, Active>();
  readonly #waiters = new Map<number, Array<(j: Job) => void>>();
  #stopped = false;

  constructor(opts: JobRunnerOptions) {
    this.#store = opts.store;
    this.#jobs = opts.store.jobs;
    this.#log = opts.log;
    this.#bus = opts.bus;
    this.#concurrency = Math.max(1, opts.concurrency ?? 2);
    this.#clock = opts.clock ?? Date.now;
  }

  register(type: string, handler: JobHandler): void {
    this.#handlers.set(type, handler);
  }

  /**
   * At start: a job left `running` by a previous process is failed (that process is gone);
   * jobs still `queued` run again if their type is known, and fail otherwise.
   */
  recover(): { failed: number[]; requeued: number[] } {
    const failed = this.#jobs.failInterrupted("interrupted: bootfleetd stopped while the job ran");
    const requeued: number[] = [];
    const queued = this.#jobs.queued();
    for (const job of queued) {
      if (this.#handlers.has(job.type)) {
        requeued.push(job.id);
        this.#queue.push(job.id);
      } else {
        this.#finish(job.id, "failed", { error: `no handler for job type ${job.type}` });
        failed.push(job.id);
      }
    }
    this.#pump();
    return { failed, requeued };
  }

  submit(type: string, params: unknown = {}, opts: SubmitOptions = {}): Job {
    if (!this.#handlers.has(type)) throw new Error(`no handler registered for job type ${type}`);
    if (this.#stopped) throw new Error("the job runner is stopped");
    const job = this.#jobs.create(type, params, opts.createdBy ?? null);
    if (opts.steps?.length) {
      const steps: JobStep[] = opts.steps.map((name) => ({ name, status: "pending" }));
      this.#jobs.update(job.id, { steps: JSON.stringify(steps) });
    }
    this.#queue.push(job.id);
    this.#publish(this.#jobs.get(job.id)!, null, null);
    queueMicrotask(() => this.#pump());
    return this.#jobs.get(job.id)!;
  }

  cancel(id: number): CancelOutcome {
    const job = this.#jobs.get(id);
    if (!job) return "not_found";
    if (FINAL.has(job.status)) return "finished";
    const active = this.#active.get(id);
    if (active) {
      this.#jobs.log(id, "warn", "cancel requested");
      active.controller.abort(new JobCancelled());
      return "cancelling";
    }
    const at = this.#queue.indexOf(id);
    if (at >= 0) this.#queue.splice(at, 1);
    this.#jobs.log(id, "warn", "cancelled before it started");
    this.#finish(id, "cancelled", { error: "cancelled" });
    return "cancelled";
  }

  /** Resolves with the job once it has finished (at once when it already has). */
  wait(id: number, timeoutMs = 0): Promise<Job> {
    const job = this.#jobs.get(id);
    if (!job) return Promise.reject(new Error(`no job ${id}`));
    if (FINAL.has(job.status)) return Promise.resolve(job);
    return new Promise((resolve, reject) => {
      const timer =
        timeoutMs > 0
          ? setTimeout(
              () => reject(new Error(`job ${id} still ${job.status} after ${timeoutMs} ms`)),
              timeoutMs,
            )
          : undefined;
      const list = this.#waiters.get(id) ?? [];
      list.push((j) => {
        if (timer) clearTimeout(timer);
        resolve(j);
      });
      this.#waiters.set(id, list);
    });
  }

  get runningCount(): number {
    return this.#active.size;
  }

  get queuedCount(): number {
    return this.#queue.length;
  }

  /** Daemon shutdown: no new work starts; running jobs are aborted and awaited up to a bound. */
  async stop(timeoutMs = 10_000): Promise<void> {
    this.#stopped = true;
    const running = [...this.#active.values()];
    for (const a of running) a.controller.abort(new JobCancelled());
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled(running.map((a) => a.done)),
      new Promise<void>((r) => {
        timer = setTimeout(r, timeoutMs);
      }),
    ]);
    if (timer) clearTimeout(timer);
  }

  #pump(): void {
    while (!this.#stopped && this.#active.size < this.#concurrency && this.#queue.length) {
      const id = this.#queue.shift()!;
      const job = this.#jobs.get(id);
      if (job?.status !== "queued") continue;
      const handler = this.#handlers.get(job.type);
      if (!handler) {
        this.#finish(id, "failed", { error: `no handler for job type ${job.type}` });
        continue;
      }
      const controller = new AbortController();
      const active: Active = { controller, done: Promise.resolve() };
      this.#active.set(id, active);
      active.done = this.#run(job, handler, controller).finally(() => {
        this.#active.delete(id);
        this.#pump();
      });
    }
  }

  async #run(job: Job, handler: JobHandler, controller: AbortController): Promise<void> {
    const id = job.id;
    const now = () => new Date(this.#clock()).toISOString();
    let steps: JobStep[] = parseSteps(job.steps);
    let percent = 0;
    let lastStored = -1;
    let currentStep: string | null = null;
    const saveSteps = () => this.#jobs.update(id, { steps: JSON.stringify(steps) });
    const setStep = (name: string, patch: Partial<JobStep>) => {
      let s = steps.find((x) => x.name === name);
      if (!s) {
        s = { name, status: "pending" };
        steps = [...steps, s];
      }
      Object.assign(s, patch);
      saveSteps();
    };

    this.#jobs.update(id, { status: "running", started_at: now() });
    this.#jobs.log(id, "info", `started ${job.type}`);
    this.#publish(this.#jobs.get(id)!, null, null);

    const ctx: JobContext = {
      id,
      signal: controller.signal,
      progress: (p, message) => {
        percent = Math.min(100, Math.max(0, Number.isFinite(p) ? p : 0));
        // One write and one event per whole percent: qemu-img reports far more often.
        const whole = Math.floor(percent);
        if (whole === lastStored && message === undefined) return;
        lastStored = whole;
        const row = this.#jobs.update(id, { progress: Math.round(percent * 100) / 100 });
        if (message) this.#jobs.log(id, "info", message);
        if (row) this.#publish(row, currentStep, message ?? null);
      },
      step: async (name, fn) => {
        if (controller.signal.aborted) throw new JobCancelled();
        currentStep = name;
        setStep(name, { status: "running", started_at: now() });
        this.#jobs.log(id, "info", `step ${name} started`);
        this.#publish(this.#jobs.get(id)!, name, null);
        try {
          const out = await fn();
          setStep(name, { status: "succeeded", ended_at: now() });
          this.#jobs.log(id, "info", `step ${name} succeeded`);
          return out;
        } catch (err) {
          const cancelled = controller.signal.aborted;
          setStep(name, {
            status: cancelled ? "cancelled" : "failed",
            ended_at: now(),
            message: cancelled ? "cancelled" : errorText(err),
          });
          throw err;
        } finally {
          currentStep = null;
        }
      },
      skip: (name, message) =>
        setStep(name, { status: "skipped", ...(message ? { message } : {}) }),
      log: (level, message) => this.#jobs.log(id, level, message),
      throwIfCancelled: () => {
        if (controller.signal.aborted) throw new JobCancelled();
      },
    };

    try {
      const params = JSON.parse(job.params) as unknown;
      const result = await handler(params, ctx);
      steps = steps.map((s) => (s.status === "pending" ? { ...s, status: "skipped" } : s));
      saveSteps();
      this.#jobs.log(id, "info", `succeeded`);
      this.#finish(id, "succeeded", {
        progress: 100,
        result: result === undefined ? null : JSON.stringify(result),
      });
    } catch (err) {
      const cancelled = controller.signal.aborted;
      steps = steps.map((s) =>
        s.status === "pending" || s.status === "running"
          ? { ...s, status: cancelled ? "cancelled" : "skipped" }
          : s,
      );
      saveSteps();
      if (cancelled) {
        this.#jobs.log(id, "warn", "cancelled");
        this.#finish(id, "cancelled", { error: "cancelled" });
      } else {
        const message = errorText(err);
        this.#jobs.log(id, "error", message);
        this.#log.warn({ job_id: id, type: job.type, err: message }, "job failed");
        this.#finish(id, "failed", { error: message });
      }
    }
  }

  #finish(id: number, status: JobStatus, patch: Partial<Job>): void {
    const row = this.#jobs.update(id, {
      ...patch,
      status,
      finished_at: new Date(this.#clock()).toISOString(),
    });
    if (!row) return;
    this.#publish(row, null, null);
    const list = this.#waiters.get(id);
    this.#waiters.delete(id);
    for (const w of list ?? []) w(row);
  }

  #publish(job: Job, step: string | null, message: string | null): void {
    this.#bus?.publish("job_progress", {
      job_id: job.id,
      type: job.type,
      status: job.status,
      progress: job.progress,
      step,
      message,
    });
  }
}

export function parseSteps(json: string): JobStep[] {
  try {
    const v = JSON.parse(json) as unknown;
    return Array.isArray(v) ? (v as JobStep[]) : [];
  } catch {
    return [];
  }
}
