import { open, readFile } from "node:fs/promises";
import type { Logger } from "pino";
import { errorText } from "../lib/error-text.js";

/**
 * Warming: the blocks a real boot reads (its boot set), read into the page cache of the
 * image version's file before the first PC asks. With dm-snapshot overlays every machine's
 * unwritten blocks are read through that one file's cache, so the 9 am storm starts warm.
 * (Reflink clones are inodes of their own: warming the image does nothing for them.)
 */
export interface ByteRange {
  offset: number;
  length: number;
}

/** A boot set is recorded beside its version file: `<image>.bootset.csv`, `offset,length`. */
export function bootSetPathOf(imagePath: string): string {
  return `${imagePath}.bootset.csv`;
}

/** Parses `offset,length` lines (a header line and blank lines are skipped). */
export function parseBootSet(csv: string): ByteRange[] {
  const out: ByteRange[] = [];
  for (const [i, raw] of csv.split("\n").entries()) {
    const line = raw.trim();
    if (line === "" || (i === 0 && /^offset\s*,/i.test(line))) continue;
    const m = /^(\d+)\s*,\s*(\d+)$/.exec(line);
    if (!m) throw new Error(`boot set line ${i + 1} is not "offset,length": ${line.slice(0, 80)}`);
    const length = Number(m[2]);
    if (length > 0) out.push({ offset: Number(m[1]), length });
  }
  return out;
}

/**
 * Sorted, overlaps merged, and ranges closer than `gap` joined: a few long reads in file
 * order instead of thousands of small random ones.
 */
export function coalesce(ranges: readonly ByteRange[], gap = 128 * 1024): ByteRange[] {
  const sorted = [...ranges].sort((a, b) => a.offset - b.offset);
  const out: ByteRange[] = [];
  for (const r of sorted) {
    const last = out.at(-1);
    if (last && r.offset <= last.offset + last.length + gap) {
      last.length = Math.max(last.length, r.offset + r.length - last.offset);
    } else {
      out.push({ ...r });
    }
  }
  return out;
}

export interface WarmOptions {
  /** Stop after this many bytes (a boot set larger than the RAM meant for it is cut). */
  maxBytes: number;
  signal?: AbortSignal;
  /** One read at a time of at most this size, so boots in progress are not queued behind. */
  chunkBytes?: number;
}

/**
 * Reads the ranges of a file once, in file order, one bounded read at a time and yielding
 * between reads (low priority: the event loop and the disk stay free for real boots).
 * Returns the bytes read.
 */
export async function warmFile(
  path: string,
  ranges: readonly ByteRange[],
  o: WarmOptions,
): Promise<number> {
  const chunk = o.chunkBytes ?? 1 << 20;
  const buf = Buffer.allocUnsafe(chunk);
  const fh = await open(path, "r");
  let total = 0;
  try {
    for (const r of coalesce(ranges)) {
      for (let at = r.offset; at < r.offset + r.length; ) {
        if (o.signal?.aborted || total >= o.maxBytes) return total;
        const len = Math.min(chunk, r.offset + r.length - at, o.maxBytes - total);
        const { bytesRead } = await fh.read(buf, 0, len, at);
        if (bytesRead === 0) break;
        total += bytesRead;
        at += bytesRead;
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
  } finally {
    await fh.close();
  }
  return total;
}

/**
 * Warms one version's boot set when it has one recorded; logs what it did. Never throws:
 * warming is an optimisation, and a failure only means a colder first boot.
 */
export async function warmVersion(
  imagePath: string,
  o: WarmOptions & { log: Logger },
): Promise<number> {
  const setPath = bootSetPathOf(imagePath);
  let ranges: ByteRange[];
  try {
    ranges = parseBootSet(await readFile(setPath, "utf8"));
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === "ENOENT";
    o.log[missing ? "debug" : "warn"](
      { image: imagePath, boot_set: setPath, err: errorText(err) },
      missing ? "no boot set recorded for this image version: not warmed" : "boot set unreadable",
    );
    return 0;
  }
  const started = performance.now();
  try {
    const bytes = await warmFile(imagePath, ranges, o);
    o.log.info(
      { image: imagePath, bytes, ms: Math.round(performance.now() - started) },
      "boot set warmed into the page cache",
    );
    return bytes;
  } catch (err) {
    o.log.warn({ image: imagePath, err: errorText(err) }, "warming the boot set failed");
    return 0;
  }
}

/**
 * Warms versions one after another (never two at once: they would compete for the disk),
 * each path at most once while queued; close() stops the one in progress.
 */
export class BootSetWarmer {
  #chain: Promise<unknown> = Promise.resolve();
  readonly #queued = new Set<string>();
  readonly #abort = new AbortController();

  constructor(private readonly o: { maxBytes: number; log: Logger }) {}

  /** Resolves when this version is warmed (or skipped); never rejects. */
  warm(imagePath: string): Promise<number> {
    if (this.o.maxBytes <= 0 || this.#queued.has(imagePath)) return Promise.resolve(0);
    this.#queued.add(imagePath);
    const run = this.#chain.then(() =>
      warmVersion(imagePath, {
        maxBytes: this.o.maxBytes,
        signal: this.#abort.signal,
        log: this.o.log,
      }).finally(() => this.#queued.delete(imagePath)),
    );
    this.#chain = run;
    return run;
  }

  close(): void {
    this.#abort.abort();
  }
}
