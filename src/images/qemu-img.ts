import { chown, open, stat } from "node:fs/promises";
import { CommandError, runProcess } from "../host/exec.js";
import type { ImageFormat } from "../store/images.js";

/**
 * qemu-img on files that came from a client. An image header can name other files (a qcow2
 * backing file or external data file, a VMDK descriptor's extents), which qemu-img would then
 * read: an upload could make the daemon copy /etc/shadow into a disk image. So anything that
 * points outside the file itself is refused, qemu-img runs under address-space and CPU limits
 * (prlimit, as OpenStack does for the same reason), and every later call names the format
 * found here instead of letting qemu-img probe again.
 *
 * A daemon running as root runs qemu-img as an unprivileged user (nobody by default) with
 * no capabilities (setpriv), so a parser bug in qemu-img reached by a crafted header gets
 * nothing of root's. That user cannot open paths in images_dir (root's, 0750): a root shell
 * opens the files qemu-img needs and hands them over as inherited descriptors, and the files
 * are lent to that user for the run, because reopening /dev/fd/N checks the file's own
 * permissions (not the folder's).
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
  /**
   * Who qemu-img runs as when the daemon is root; default nobody:nogroup (65534:65534).
   * null runs it as the daemon (so does a daemon that is not root: it cannot switch).
   */
  runAs?: { uid: number; gid: number } | null;
}

const NOBODY = { uid: 65534, gid: 65534 };

function runAsOf(opts: QemuImgOptions): { uid: number; gid: number } | undefined {
  if (opts.runAs === null || process.getuid?.() !== 0) return undefined;
  return opts.runAs ?? NOBODY;
}

interface Limits {
  /** Apply the CPU-time limit (not to a conversion, which may rightly take hours). */
  cpu: boolean;
  /** Address space instead of memoryLimitBytes. */
  asBytes?: number;
}

function prlimit(opts: QemuImgOptions, limits: Limits): string[] {
  return [
    "prlimit",
    `--as=${limits.asBytes ?? opts.memoryLimitBytes ?? 1 << 30}`,
    ...(limits.cpu ? [`--cpu=${opts.cpuLimitSeconds ?? 30}`] : []),
    "--",
  ];
}

/** A file qemu-img works on: read (the upload) or written (the converted copy). */
interface ImageFile {
  path: string;
  write: boolean;
}

/**
 * The command line for qemu-img on `files`, whose places in `args` are given as
 * FILE_0, FILE_1, ... Unprivileged: `sh -c` (still root) opens each file on descriptor
 * 3, 4, ... and execs setpriv, which drops to the user with no capabilities, no
 * supplementary groups and no way to regain privileges, then prlimit, then qemu-img on
 * /dev/fd/3, /dev/fd/4, ...
 */
function commandLine(
  opts: QemuImgOptions,
  args: string[],
  files: ImageFile[],
  limits: Limits,
): { cmd: string; args: string[]; as?: { uid: number; gid: number } } {
  const bin = opts.binary ?? "qemu-img";
  const as = runAsOf(opts);
  const place = (fileName: (i: number) => string) =>
    args.map((a) => {
      const m = /^FILE_(\d)$/.exec(a);
      return m ? fileName(Number(m[1])) : a;
    });
  if (!as) {
    const direct = [...prlimit(opts, limits), bin, ...place((i) => files[i]!.path)];
    return { cmd: direct[0]!, args: direct.slice(1) };
  }
  const redirects = files.map((f, i) => `${3 + i}${f.write ? "<>" : "<"}"$${i + 1}"`).join(" ");
  const script = `exec ${redirects} && shift ${files.length} && exec "$@"`;
  const dropped = [
    "setpriv",
    `--reuid=${as.uid}`,
    `--regid=${as.gid}`,
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
    "--no-new-privs",
    "--",
  ];
  return {
    cmd: "sh",
    args: [
      "-c",
      script,
      "sh",
      ...files.map((f) => f.path),
      ...dropped,
      ...prlimit(opts, limits),
      bin,
      ...place((i) => `/dev/fd/${3 + i}`),
    ],
    as,
  };
}

/**
 * Runs `fn` with the files lent to the unprivileged user (made its own, so its owner
 * permissions apply whatever the mode), and given back afterwards, whatever happened.
 */
async function lendFiles<T>(
  as: { uid: number; gid: number } | undefined,
  files: ImageFile[],
  fn: () => Promise<T>,
): Promise<T> {
  if (!as) return fn();
  const lent: { path: string; uid: number; gid: number }[] = [];
  try {
    for (const f of files) {
      const st = await stat(f.path);
      lent.push({ path: f.path, uid: st.uid, gid: st.gid });
      await chown(f.path, as.uid, as.gid);
    }
    return await fn();
  } finally {
    for (const l of lent) await chown(l.path, l.uid, l.gid).catch(() => {});
  }
}

async function runQemuImg(
  opts: QemuImgOptions,
  args: string[],
  files: ImageFile[],
  run: { timeoutMs: number; limits: Limits; onStdout?: (s: string) => void },
) {
  const line = commandLine(opts, args, files, run.limits);
  return lendFiles(line.as, files, () =>
    runProcess(line.cmd, line.args, {
      timeoutMs: run.timeoutMs,
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(run.onStdout ? { onStdout: run.onStdout } : {}),
    }),
  );
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
  const r = await runQemuImg(opts, ["info", "--output=json", "FILE_0"], [{ path, write: false }], {
    timeoutMs: opts.timeoutMs ?? 60_000,
    limits: { cpu: true },
  });
  if (r.killed === "aborted") throw new CommandError("qemu-img", ["info"], r);
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
  const r = await runQemuImg(
    opts,
    ["check", "-f", qfmt, "--output=json", "FILE_0"],
    [{ path, write: false }],
    { timeoutMs: opts.timeoutMs ?? 10 * 60_000, limits: { cpu: true } },
  );
  if (r.killed === "aborted") throw new CommandError("qemu-img", ["check"], r);
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
  const unprivileged = runAsOf(opts) !== undefined;
  if (unprivileged) {
    // qemu-img cannot create a file in a folder it cannot enter: it is given an empty,
    // sparse one of the disk's size, to write into (-n) without writing zeros.
    const { virtualSize } = await probeImage(src, opts);
    const out = await open(dest, "wx", 0o640);
    try {
      await out.truncate(virtualSize);
    } finally {
      await out.close();
    }
  }
  // -W is not used so writes stay ordered.
  const args = [
    "convert",
    "-p",
    "-f",
    qemuFormatName(format),
    "-O",
    "raw",
    ...(unprivileged ? ["-n", "--target-is-zero"] : []),
    "FILE_0",
    "FILE_1",
  ];
  let buffered = "";
  const files = [
    { path: src, write: false },
    { path: dest, write: true },
  ];
  const r = await runQemuImg(opts, args, files, {
    timeoutMs: opts.timeoutMs ?? 6 * 60 * 60_000,
    // Room for qemu-img's I/O threads; a header that makes it allocate more is refused.
    limits: { cpu: false, asBytes: Math.max(opts.memoryLimitBytes ?? 0, 4 * 2 ** 30) },
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
    if (r.killed) throw new CommandError("qemu-img", ["convert"], r);
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
