import type * as z from "zod";
import { parseOr422 } from "./validate.js";

/** Enough for the few query strings a dashboard polls one route with. */
const DEFAULT_MAX_KEPT = 64;
/** Longer query strings are validated each time. */
const MAX_KEPT_QUERY = 512;

/**
 * One route's query strings already validated, with what the schema made of them. A
 * dashboard polls a list with the same query string again and again; parsing it and running
 * the zod schema cost ~5 µs of a cached list's ~100 (bench/api/RESULTS.md). The schema's
 * output is a function of the query string alone (coercions, defaults and transforms: no
 * clock, no store), so a kept result is what a new parse would give. A refused query string
 * (422) is not kept: it throws as before. Kept results are frozen, so no handler can change
 * what the next request gets; beyond its size the oldest entry goes.
 */
export class QueryMemo<S extends z.ZodType> {
  readonly #kept = new Map<string, z.output<S>>();

  constructor(
    private readonly schema: S,
    private readonly maxKept = DEFAULT_MAX_KEPT,
  ) {}

  /**
   * The validated query of a request: `url` is its full URL (the key is what follows the
   * first "?"), `parsed` gives its parameters as Hono parses them, called only when the
   * query string is not kept.
   */
  parse(url: string, parsed: () => Record<string, string>): z.output<S> {
    const at = url.indexOf("?");
    const key = at < 0 ? "" : url.slice(at + 1);
    const kept = this.#kept.get(key);
    if (kept !== undefined) return kept;
    const value = deepFreeze(parseOr422(this.schema, parsed(), "query"));
    if (key.length <= MAX_KEPT_QUERY) {
      if (this.#kept.size >= this.maxKept) {
        const oldest = this.#kept.keys().next().value;
        if (oldest !== undefined) this.#kept.delete(oldest);
      }
      this.#kept.set(key, value);
    }
    return value;
  }

  get size(): number {
    return this.#kept.size;
  }
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
