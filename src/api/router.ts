import type { Result, Router } from "hono/router";
import { RegExpRouter } from "hono/router/reg-exp-router";
import { SmartRouter } from "hono/router/smart-router";
import { TrieRouter } from "hono/router/trie-router";

/** Enough for every fixed path the API and the dashboard have, with room to spare. */
const DEFAULT_MAX_KEPT = 256;
/** Longer paths are matched each time: a kept answer is for the short paths clients poll. */
const MAX_KEPT_PATH = 256;

/**
 * Hono's default router (SmartRouter: RegExpRouter, else TrieRouter) with the match of a
 * path without parameters kept, per method and path.
 *
 * The API's routes make RegExpRouter give up (`POST /sessions/start` beside
 * `POST /sessions/:session_id/stop`), so Hono falls back to TrieRouter, which walks its
 * tree and sorts the matched middleware and handlers on every request: ~10 µs of the
 * ~110 µs a polled list cost (bench/api/RESULTS.md). The answer is a function of the method
 * and the path alone once the routes are added, so it is kept; any route added afterwards
 * drops what was kept. Only answers without path parameters are kept (the fixed paths that
 * dashboards poll), so ids in paths do not crowd the map; beyond its size the oldest entry
 * goes.
 */
export class MemoRouter<T> implements Router<T> {
  name = "MemoRouter";
  readonly #inner: Router<T>;
  readonly #kept = new Map<string, Result<T>>();

  constructor(
    inner?: Router<T>,
    private readonly maxKept = DEFAULT_MAX_KEPT,
  ) {
    this.#inner = inner ?? new SmartRouter({ routers: [new RegExpRouter(), new TrieRouter()] });
  }

  add(method: string, path: string, handler: T): void {
    this.#kept.clear();
    this.#inner.add(method, path, handler);
  }

  match(method: string, path: string): Result<T> {
    const key = `${method} ${path}`;
    const kept = this.#kept.get(key);
    if (kept) return kept;
    const result = this.#inner.match(method, path);
    if (path.length <= MAX_KEPT_PATH && withoutParams(result)) {
      if (this.#kept.size >= this.maxKept) {
        const oldest = this.#kept.keys().next().value;
        if (oldest !== undefined) this.#kept.delete(oldest);
      }
      this.#kept.set(key, result);
    }
    return result;
  }

  /** How many matches are kept (for tests). */
  get keptSize(): number {
    return this.#kept.size;
  }
}

/**
 * Whether no matched route took a parameter from the path: each handler's parameters
 * (TrieRouter: the values; RegExpRouter: their indexes into the stash) are empty.
 */
function withoutParams<T>(result: Result<T>): boolean {
  for (const [, params] of result[0]) {
    for (const _ in params) return false;
  }
  return true;
}
