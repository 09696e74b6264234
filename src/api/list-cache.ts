/**
 * Finished list answers, kept while nothing they were built from changed. Building a page
 * (its rows, their live states, the JSON) costs ~100 times more than sending it, and a
 * dashboard polls the same pages again and again while nothing happens. An entry is used
 * only while
 *   - the store's generation (Store.generation: any write, by any process) is the one it
 *     was built at, and
 *   - its own check still holds (the live states: time alone turns a boot into a stall).
 * Otherwise it is rebuilt, so a cached answer is always the answer a rebuild would give.
 * Keyed by who may see what (a client sees only its own machines) and the parsed query.
 */

/** One page as sent: the JSON bytes and the number of rows all pages hold. */
export interface CachedPage {
  body: Uint8Array<ArrayBuffer>;
  total: number;
}

interface Entry {
  page: CachedPage;
  generation: string;
  stillHolds: () => boolean;
}

/** Enough for every page a few dashboards show; the oldest entry goes first beyond it. */
const DEFAULT_MAX_ENTRIES = 64;

export class ListCache {
  readonly #entries = new Map<string, Entry>();

  constructor(private readonly maxEntries = DEFAULT_MAX_ENTRIES) {}

  /** The page kept for this key, if it was built at this generation and still holds. */
  get(key: string, generation: string): CachedPage | undefined {
    const e = this.#entries.get(key);
    if (!e) return undefined;
    if (e.generation !== generation || !e.stillHolds()) {
      this.#entries.delete(key);
      return undefined;
    }
    return e.page;
  }

  set(key: string, generation: string, page: CachedPage, stillHolds: () => boolean): void {
    this.#entries.delete(key);
    if (this.#entries.size >= this.maxEntries) {
      // Maps iterate in insertion order: the first key is the oldest entry.
      const oldest = this.#entries.keys().next().value;
      if (oldest !== undefined) this.#entries.delete(oldest);
    }
    this.#entries.set(key, { page, generation, stillHolds });
  }

  get size(): number {
    return this.#entries.size;
  }
}
