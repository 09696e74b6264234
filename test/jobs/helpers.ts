import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { Store } from "../../src/store/index.js";

export const silent = pino({ level: "silent" });

/** A store in a fresh temp folder, removed in teardown. */
export function tempStore(
  t: { teardown(fn: () => void): void },
  label: string,
): { store: Store; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), `bf-${label}-${process.pid}-`));
  const store = Store.open({ path: join(dir, "bootfleet.db"), busyTimeoutMs: 2000 });
  t.teardown(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { store, dir };
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
