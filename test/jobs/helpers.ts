import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { Store } from "../../src/store/index.js";

export const silent = pino({ level: "silent" });

/** A store in a fresh temp folder, removed in teardown. */
export function tempStore(
  t: { teardown(fn: () => void | Promise<void>): void },
  label: string,
): { store: Store; dir: string; beforeClose(fn: () => void | Promise<void>): void } {
  const dir = mkdtempSync(join(tmpdir(), `bf-${label}-${process.pid}-`));
  const store = Store.open({ path: join(dir, "bootfleet.db"), busyTimeoutMs: 2000 });
  // What still writes to the store (a job runner) stops before the store closes.
  const hooks: (() => void | Promise<void>)[] = [];
  t.teardown(async () => {
    for (const hook of hooks) await hook();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { store, dir, beforeClose: (fn) => hooks.push(fn) };
}

export function deferred<T = void>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

export async function until(cond: () => boolean, timeoutMs = 5000, what = "condition") {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
