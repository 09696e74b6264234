import { CommandError, runProcess } from "../host/exec.js";
import type { ImageFormat } from "../store/images.js";

/**
 * qemu-img on files that came from a client. An image header can name other files (a qcow2
 * backing file or external data file, a VMDK descriptor's extents), which qemu-img would then
 * read: an upload could make the daemon copy /etc/shadow into a disk image. So anything that
 * points outside the file itself is refused, qemu-img runs under address-space and CPU limits
 * (prlimit, as OpenStack does for the same reason), and every later call names the format
 * found here instead of letting qemu-img probe again.
 */

/** Formats accepted from clients, by qemu-img's name for them. */
const FORMATS: Record<string, ImageFormat> = {
  raw: "raw",
  qcow2: "qcow2",
  vpc: "vhd",
  vhdx: "vhdx",
  vmdk: "vmdk",
  vdi: "vdi",
};

/** Our name back to qemu-img's. */
export function qemuFormatName(format: ImageFormat): string {
  return format === "vhd" ? "vpc" : format;
}

// Single-file VMDK layouts; the others are a text descriptor that names extent files.
const VMDK_SINGLE_FILE = new Set(["monolithicSparse", "streamOptimized"]);
// Formats whose metadata `qemu-img check` can verify; the others report "not supported".
const CHECKABLE = new Set(["qcow2", "vhdx", "vdi", "vmdk"]);

export interface ImageInfo {
  format: ImageFormat;
  /** The disk size the image describes: what the raw copy will be. */
  virtualSize: number;
  /** Bytes the image file holds on disk. */
  actualSize: number;
}

/** The image cannot be used: the reason is meant for the admin (images.status_reason). */
export class ImageRejected extends Error {
  override name = "ImageRejected";
}

export interface QemuImgOptions {
  /** The qemu-img binary; a test can point at another. */
  binary?: string;
  /** prlimit's address-space limit for info and check (bytes). */
  memoryLimitBytes?: number;
  cpuLimitSeconds?: number;
  timeoutMs?: number;
  signal?: AbortSignal;
}

function limited(opts: QemuImgOptions, args: string[]): [string, string[]] {
  const bin = opts.binary ?? "qemu-img";
  return [
    "prlimit",
    [
      `--as=${opts.memoryLimitBytes ?? 1 << 30}`,
      `--cpu=${opts.cpuLimitSeconds ?? 30}`,
      "--",
      bin,
      ...args,
    ],
  ];
}

interface QemuInfoJson {
  format?: string;
  "virtual-size"?: number;
  "actual-size"?: number;
  filename?: string;
  "backing-filename"?: string;
  "full-backing-filename"?: string;
  "format-specific"?: {
    type?: string;
    data?: {
      "data-file"?: string;
      "create-type"?: string;
      extents?: { filename?: string }[];
      corrupt?: boolean;
    };
  };
}

/** `qemu-img info --output=json`, checked for anything that reaches outside the file. */
export async function probeImage(path: string, opts: QemuImgOptions = {}): Promise<ImageInfo> {
  assertOurPath(path);
  const [cmd, args] = limited(opts, ["info", "--output=json", path]);
  const r = await runProcess(cmd, args, {
    timeoutMs: opts.timeoutMs ?? 60_000,
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  if (r.killed === "aborted") throw new CommandError(cmd, args, r);
  if (r.code !== 0) {
    throw new ImageRejected(
      `not a readable disk image: ${lastLines(r.stderr) || `qemu-img info exited with ${r.code}`}`,
    );
  }
  let info: QemuInfoJson;
  try {
    info = JSON.parse(r.stdout) as QemuInfoJson;
  } catch {
    throw new ImageRejected("qemu-img info gave output that is not JSON");
  }
  const qfmt = info.format ?? "";
  const format = FORMATS[qfmt];
  if (!format) throw new ImageRejected(`unsupported image format ${JSON.stringify(qfmt)}`);
  if (info["backing-filename"] !== undefined || info["full-backing-filename"] !== undefined) {
    throw new ImageRejected(
      `the image refers to a backing file (${info["backing-filename"] ?? info["full-backing-filename"]}); upload a self-contained image (qemu-img convert flattens it)`,
    );
  }
  const data = info["format-specific"]?.data;
  if (data?.["data-file"] !== undefined) {
    throw new ImageRejected(
      "the image keeps its data in an external data file; upload a self-contained image",
    );
  }
  if (format === "vmdk") {
    const kind = data?.["create-type"] ?? "";
    if (!VMDK_SINGLE_FILE.has(kind)) {
      throw new ImageRejected(
        `VMDK of type ${JSON.stringify(kind)} is split over several files; upload a monolithicSparse or streamOptimized VMDK`,
      );
    }
    for (const e of data?.extents ?? []) {
      if (e.filename !== undefined && e.filename !== info.filename) {
        throw new ImageRejected("the VMDK names an extent in another file");
      }
    }
  }
  if (data?.corrupt === true) throw new ImageRejected("the image is marked corrupt in its header");
  const virtualSize = info["virtual-size"];
  if (typeof virtualSize !== "number" || virtualSize <= 0) {
    throw new ImageRejected("the image has no virtual size");
  }
  return { format, virtualSize, actualSize: info["actual-size"] ?? 0 };
}

/**
 * `qemu-img check` for formats with metadata to verify: a truncated or damaged qcow2 still
 * converts without an error (what is missing reads as zeros), so this is the step that
 * catches it. Leaked clusters alone are harmless for a copy and are accepted.
 */
export async function checkImage(
  path: string,
  format: ImageFormat,
  opts: QemuImgOptions = {},
): Promise<void> {
  assertOurPath(path);
  const qfmt = qemuFormatName(format);
  if (!CHECKABLE.has(qfmt)) return;
  const [cmd, args] = limited(opts, ["check", "-f", qfmt, "--output=json", path]);
  const r = await runProcess(cmd, args, {
    timeoutMs: opts.timeoutMs ?? 10 * 60_000,
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  if (r.killed === "aborted") throw new CommandError(cmd, args, r);
  // 0 clean, 3 leaks only, 63 check not supported: all fine for copying. 1 = check failed
  // to run, 2 = corruptions.
  if (r.code === 0 || r.code === 3 || r.code === 63) return;
  let corruptions: number | undefined;
  try {
    corruptions = (JSON.parse(r.stdout) as { corruptions?: number }).corruptions;
  } catch {}
  throw new ImageRejected(
    corruptions
      ? `the image is corrupt: qemu-img check found ${corruptions} corrupted cluster(s)`
      : `the image failed its consistency check: ${lastLines(r.stderr) || `qemu-img check exited with ${r.code}`}`,
  );
}

/** Parses the percentages `qemu-img convert -p` prints, e.g. "    (42.17/100%)\r". */
export function parseConvertProgress(chunk: string): number | undefined {
  let last: number | undefined;
  for (const m of chunk.matchAll(/\((\d{1,3}(?:\.\d+)?)\/100%\)/g)) {
    const v = Number.parseFloat(m[1]!);
    if (v >= 0 && v <= 100) last = v;
  }
  return last;
}

export interface ConvertOptions extends QemuImgOptions {
  onProgress?: (percent: number) => void;
}

/** Converts to a sparse raw file at `dest` (which must not exist yet). */
export async function convertToRaw(
  src: string,
  format: ImageFormat,
  dest: string,
  opts: ConvertOptions = {},
): Promise<void> {
  assertOurPath(src);
  assertOurPath(dest);
  // -n is not used: qemu-img creates dest itself; -W is not used so writes stay ordered.
  const args = ["convert", "-p", "-f", qemuFormatName(format), "-O", "raw", src, dest];
  let buffered = "";
  const r = await runProcess(opts.binary ?? "qemu-img", args, {
    timeoutMs: opts.timeoutMs ?? 6 * 60 * 60_000,
    ...(opts.signal ? { signal: opts.signal } : {}),
    onStdout: (s) => {
      // A progress figure can be split across chunks: keep the tail after the last ")".
      buffered += s;
      const p = parseConvertProgress(buffered);
      const cut = buffered.lastIndexOf(")");
      if (cut >= 0) buffered = buffered.slice(cut + 1);
      if (p !== undefined) opts.onProgress?.(p);
    },
  });
  if (r.code !== 0 || r.killed) {
    if (r.killed) throw new CommandError("qemu-img", args, r);
    if (/No space left on device/i.test(r.stderr)) {
      throw new ImageRejected("not enough free space in the image folder to convert the image");
    }
    throw new ImageRejected(`conversion to raw failed: ${lastLines(r.stderr) || `exit ${r.code}`}`);
  }
}

/** Paths handed to qemu-img are always ours and absolute: never an option, never "proto:". */
function assertOurPath(p: string): void {
  if (!p.startsWith("/") || p.includes("\0"))
    throw new Error(`refusing image path ${JSON.stringify(p)}`);
}

function lastLines(s: string): string {
  return s.trim().split("\n").slice(-2).join(" / ").slice(0, 500);
}
