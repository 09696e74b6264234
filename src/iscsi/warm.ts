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

/** Sorted, overlaps merged, and ranges closer than `gap` bytes joined. */
export function coalesce(ranges: readonly ByteRange[], gap: number): ByteRange[] {
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

const PAGE = 4096;
/**
 * At most the smallest read-ahead window a Linux file system device is given (the default is
 * 128 KiB): a read up to the window that does not follow the previous one is read as asked,
 * while a longer one starts read-ahead past its end.
 */
const WARM_CHUNK_BYTES = 32 * 1024;

/**
 * The ranges to warm, within the file and within `maxBytes`, in the set's file order from its
 * start: sorted, overlaps merged, and ranges merged where one starts in the page the other
 * ends in (so no page is read twice, and no page between two ranges is read).
 */
function warmRanges(
  ranges: readonly ByteRange[],
  fileBytes: number,
  maxBytes: number,
): ByteRange[] {
  const out: ByteRange[] = [];
  for (const r of coalesce(ranges, 0)) {
    const end = Math.min(r.offset + r.length, fileBytes);
    if (end <= r.offset) break; // sorted: every later range is past the end too
    const last = out.at(-1);
    if (last && Math.floor(r.offset / PAGE) <= Math.floor((last.offset + last.length - 1) / PAGE)) {
      last.length = end - last.offset;
    } else {
      out.push({ offset: r.offset, length: end - r.offset });
    }
  }
  let total = 0;
  const cut: ByteRange[] = [];
  for (const r of out) {
    if (total >= maxBytes) break;
    const length = Math.min(r.length, maxBytes - total);
    cut.push({ offset: r.offset, length });
    total += length;
  }
  return cut;
}

/**
 * Reads the ranges of a file once, one bounded read at a time and yielding between reads
 * (low priority: the event loop and the disk stay free for real boots). Returns the bytes
 * read.
 *
 * Why backwards, from the last range to the first and each from its end: the kernel reads
 * ahead of a read that follows the one before it, or that has pages of the file cached just
 * before it, by up to the device's read-ahead window (128 KiB by default). Warming in file
 * order therefore read a window past the end of every range: 14.9 MiB from disk for a boot
 * set of 12.8 (bench/lio). Read from the end, no read follows the one before and nothing
 * below it is cached by the warming itself, so each is read as asked: 12.9 MiB. Two cases
 * still read ahead: a read of the file's first page (always; so that page is read alone, and
 * at most 3 pages past it come along), and pages already cached below a read by others (boots
 * during the warming, an earlier warming partly evicted). Node has no posix_fadvise(RANDOM)
 * or readahead(2) to rule those out. On a spinning disk, backwards reads of 32 KiB may cost
 * a rotation each; not measured (the machines here have none).
 */
export async function warmFile(
  path: string,
  ranges: readonly ByteRange[],
  o: WarmOptions,
): Promise<number> {
  const chunk = Math.max(PAGE, o.chunkBytes ?? WARM_CHUNK_BYTES);
  const buf = Buffer.allocUnsafe(chunk);
  const fh = await open(path, "r");
  let total = 0;
  try {
    const wanted = warmRanges(ranges, (await fh.stat()).size, o.maxBytes);
    for (let i = wanted.length - 1; i >= 0; i--) {
      const r = wanted[i]!;
      for (let end = r.offset + r.length; end > r.offset; ) {
        if (o.signal?.aborted) return total;
        // Chunks start on a page boundary, so two reads never share a page; the file's
        // first page is read on its own (the kernel reads ahead of any read of it).
        let from = Math.max(r.offset, Math.ceil((end - chunk) / PAGE) * PAGE);
        if (from === 0 && end > PAGE) from = PAGE;
        const { bytesRead } = await fh.read(buf, 0, end - from, from);
        total += bytesRead;
        end = from;
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
