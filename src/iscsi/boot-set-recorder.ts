import { randomBytes } from "node:crypto";
import { link, open, stat, unlink } from "node:fs/promises";
import { availableParallelism } from "node:os";
import type { Logger } from "pino";
import { errorText } from "../lib/error-text.js";
import { areaSectorsFor, formatBootSet, parseStatsPrint, readRanges } from "./boot-set-areas.js";
import { type ByteRange, bootSetPathOf } from "./warm.js";

/**
 * Records a version's boot set from a real boot, so that warming (warm.ts) works for the
 * admin's own images, not only for those shipped with a `.bootset.csv`: the first machine
 * that boots a version without one gets device-mapper statistics on its own device (no
 * change to the device stack), and after a window (or when its device goes) the areas it
 * read become `<version>.bootset.csv`.
 */

/** What the recorder needs of device-mapper (overlay/dm-devices.ts has it). */
export interface ReadStats {
  statsCreate(device: string, areaSectors: number, programId: string): Promise<number>;
  statsPrint(device: string, region: number): Promise<string>;
  statsDelete(device: string, region: number): Promise<void>;
  statsList(device: string, programId: string): Promise<number[]>;
}

/** Our regions' tag: a later process finds (and deletes) what a crashed one left. */
export const BOOT_SET_PROGRAM_ID = "bootfleet-bootset";

export interface BootSetRecorderOptions {
  stats: ReadStats;
  /** How long a recording runs from its start; 0 turns recording off. */
  windowMs: number;
  log: Logger;
  /** CPUs the kernel keeps counters for (the area size depends on it): the host's, by default. */
  cpus?: number;
}

interface Recording {
  image: string;
  device: string;
  deviceBytes: number;
  region?: number;
  startedAt: number;
  timer?: NodeJS.Timeout;
  /** Whether the region was made (false: skipped or failed). */
  ready: Promise<boolean>;
  ending?: Promise<void>;
}

/** One recording per version, and per device, at a time. */
export class BootSetRecorder {
  readonly #byImage = new Map<string, Recording>();
  readonly #byDevice = new Map<string, Recording>();
  readonly #cpus: number;
  #closed = false;

  constructor(private readonly o: BootSetRecorderOptions) {
    this.#cpus = o.cpus ?? availableParallelism();
  }

  /**
   * Starts recording `image`'s boot set on the dm device `device` (a machine's disk over
   * that image, about to boot) unless recording is off, the version has a boot set file
   * (an admin's wins), or a recording of it (or on that device) runs. Resolves true when
   * it started; never rejects: a failure only means no recording this time.
   */
  async start(image: string, device: string, deviceBytes: number): Promise<boolean> {
    if (this.o.windowMs <= 0 || this.#closed) return false;
    if (this.#byImage.has(image) || this.#byDevice.has(device)) return false;
    // Taken before the first await: a storm of boots of one version starts one recording.
    const rec: Recording = {
      image,
      device,
      deviceBytes,
      startedAt: 0,
      ready: Promise.resolve(false),
    };
    this.#byImage.set(image, rec);
    this.#byDevice.set(device, rec);
    rec.ready = this.#begin(rec);
    const started = await rec.ready;
    if (!started) this.#forget(rec);
    return started;
  }

  /** The device is about to go: its recording ends now, with what it has counted. */
  async deviceGoing(device: string): Promise<void> {
    const rec = this.#byDevice.get(device);
    if (rec) await this.#end(rec, true);
  }

  /**
   * Deletes regions of ours on a device that this process did not make (a daemon that
   * stopped without deleting them); the kernel would count every I/O into them until the
   * device goes. Never rejects.
   */
  async sweep(device: string): Promise<void> {
    if (this.#byDevice.has(device)) return;
    try {
      for (const region of await this.o.stats.statsList(device, BOOT_SET_PROGRAM_ID)) {
        await this.o.stats.statsDelete(device, region);
        this.o.log.info({ device, region }, "stale boot-set recording deleted");
      }
    } catch (err) {
      this.o.log.debug({ device, err: errorText(err) }, "cannot list dm statistics regions");
    }
  }

  /** The recording of `image` in progress ends (tests). */
  ended(image: string): Promise<void> {
    const rec = this.#byImage.get(image);
    return rec ? this.#end(rec, true) : Promise.resolve();
  }

  /** Stops: every recording's region is deleted, nothing written (it did not run its window). */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#byImage.values()].map((rec) => this.#end(rec, false)));
  }

  async #begin(rec: Recording): Promise<boolean> {
    try {
      if (await exists(bootSetPathOf(rec.image))) return false;
      const areaSectors = areaSectorsFor(rec.deviceBytes, this.#cpus);
      rec.region = await this.o.stats.statsCreate(rec.device, areaSectors, BOOT_SET_PROGRAM_ID);
      rec.startedAt = performance.now();
      rec.timer = setTimeout(() => void this.#end(rec, true), this.o.windowMs);
      rec.timer.unref();
      this.o.log.info(
        {
          image: rec.image,
          device: rec.device,
          area_bytes: areaSectors * 512,
          seconds: this.o.windowMs / 1000,
        },
        "recording the boot set of this version from this boot",
      );
      return true;
    } catch (err) {
      this.o.log.warn(
        { image: rec.image, device: rec.device, err: errorText(err) },
        "cannot record the boot set (device-mapper statistics)",
      );
      return false;
    }
  }

  /** Ends a recording once, whoever asks first (its timer, its device going, a stop). */
  #end(rec: Recording, write: boolean): Promise<void> {
    rec.ending ??= (async () => {
      const started = await rec.ready;
      clearTimeout(rec.timer);
      if (!started || rec.region === undefined) return;
      try {
        if (write) {
          const text = await this.o.stats.statsPrint(rec.device, rec.region);
          await this.#write(rec, readRanges(parseStatsPrint(text), rec.deviceBytes));
        }
      } catch (err) {
        this.o.log.warn(
          { image: rec.image, device: rec.device, err: errorText(err) },
          "boot set not recorded",
        );
      } finally {
        await this.o.stats.statsDelete(rec.device, rec.region).catch((err: unknown) => {
          // The device went first (removed by someone else): its regions went with it.
          this.o.log.debug({ device: rec.device, err: errorText(err) }, "region not deleted");
        });
        this.#forget(rec);
      }
    })();
    return rec.ending;
  }

  /**
   * Publishes the file atomically and never over one that exists: written under a temp
   * name, then hard-linked to its name (which fails when an admin put one there meanwhile).
   */
  async #write(rec: Recording, ranges: ByteRange[]): Promise<void> {
    const seconds = Math.round((performance.now() - rec.startedAt) / 1000);
    if (ranges.length === 0) {
      this.o.log.info(
        { image: rec.image, seconds },
        "nothing was read during the recording: no boot set written, the next boot records",
      );
      return;
    }
    const path = bootSetPathOf(rec.image);
    const tmp = `${path}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`;
    try {
      const fh = await open(tmp, "wx", 0o644);
      try {
        await fh.writeFile(formatBootSet(ranges));
        await fh.sync();
      } finally {
        await fh.close();
      }
      await link(tmp, path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") {
        this.o.log.info(
          { image: rec.image, boot_set: path },
          "a boot set appeared meanwhile: kept",
        );
        return;
      }
      throw err;
    } finally {
      await unlink(tmp).catch(() => {});
    }
    this.o.log.info(
      {
        image: rec.image,
        boot_set: path,
        ranges: ranges.length,
        bytes: ranges.reduce((a, r) => a + r.length, 0),
        seconds,
      },
      "boot set recorded",
    );
  }

  #forget(rec: Recording): void {
    if (this.#byImage.get(rec.image) === rec) this.#byImage.delete(rec.image);
    if (this.#byDevice.get(rec.device) === rec) this.#byDevice.delete(rec.device);
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
