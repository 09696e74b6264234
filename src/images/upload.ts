import { createHash, randomBytes } from "node:crypto";
import { open, unlink } from "node:fs/promises";
import { join } from "node:path";
import { Readable, Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import type busboy from "busboy";
import { ImageError, UploadAborted } from "./errors.js";

/** Temp files of uploads in progress: the prefix lets cleanup recognise dead ones. */
export const UPLOAD_TEMP_PREFIX = ".upload-";
export const UPLOAD_TEMP_SUFFIX = ".part";

export interface ReceiveUploadOptions {
  /** The request's headers (content-type carries the multipart boundary). */
  headers: Record<string, string | undefined>;
  /** The request body, as a Node stream or a web stream (Hono's `c.req.raw.body`). */
  body: Readable | ReadableStream<Uint8Array>;
  /** The folder the temp file goes into: images_dir, so the final rename stays on one fs. */
  dir: string;
  /** Largest accepted file, in bytes; one byte more and the upload fails with 413. */
  maxBytes: number;
  /** The multipart field that carries the file. */
  fileField?: string;
  /**
   * Bytes that may be written before the free-space reserve is reached: a declared length
   * above it is refused before reading, and a body of unknown length is cut where its
   * counted bytes cross it; both with `storage_full` (507), without leaving a file.
   */
  spaceBytes?: { bytes: number; reason: string };
  /** Called once the temp file exists, and again (with undefined) when it is gone or kept. */
  onTempFile?: (path: string) => void;
}

export interface ReceivedUpload {
  /** The complete, fsynced temp file; the caller renames it or removes it. */
  tempPath: string;
  bytes: number;
  md5: string;
  sha256: string;
  /** The name the client gave, made safe for display; never used as a path. */
  clientFilename: string;
  /** The other form fields, as text. */
  fields: Record<string, string>;
}

export { UploadAborted } from "./errors.js";

/**
 * Streams one multipart upload to a temp file, computing md5 and sha256 on the way, with
 * backpressure from the disk to the socket: memory use does not depend on the file's size.
 * On any failure (too large, disk full, client gone, bad form) the temp file is removed
 * before the promise rejects, so nothing of a failed upload is left on disk.
 */
export async function receiveUpload(opts: ReceiveUploadOptions): Promise<ReceivedUpload> {
  const fileField = opts.fileField ?? "file";
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(opts.headers))
    if (v !== undefined) headers[k.toLowerCase()] = v;
  if (!/^multipart\/form-data/i.test(headers["content-type"] ?? "")) {
    throw new ImageError("invalid_upload", "the upload must be multipart/form-data", {
      field: "file",
    });
  }
  const declared = Number(headers["content-length"]);
  if (declaredOverLimit(headers["content-length"], opts.maxBytes)) throw tooLarge(opts.maxBytes);
  if (opts.spaceBytes && Number.isFinite(declared) && declared > opts.spaceBytes.bytes) {
    throw noSpace(opts.spaceBytes.reason);
  }

  // Loaded with the first upload: most daemons never receive one after their first days.
  const { default: makeBusboy } = await import("busboy");
  let bb: busboy.Busboy;
  try {
    bb = makeBusboy({
      headers,
      // busboy stops at its limit before our count can tell "exactly max" from "max + 1".
      limits: {
        files: 1,
        fileSize: opts.maxBytes + 1,
        fields: 32,
        fieldSize: 64 * 1024,
        parts: 40,
      },
      defParamCharset: "utf8",
    });
  } catch (err) {
    throw new ImageError(
      "invalid_upload",
      `malformed multipart request: ${(err as Error).message}`,
      {
        field: "file",
      },
    );
  }

  const body = opts.body instanceof Readable ? opts.body : Readable.fromWeb(opts.body as never);
  const fields: Record<string, string> = {};
  const tempPath = join(
    opts.dir,
    `${UPLOAD_TEMP_PREFIX}${randomBytes(12).toString("hex")}${UPLOAD_TEMP_SUFFIX}`,
  );
  let tempCreated = false;
  let fileDone: Promise<{ bytes: number; md5: string; sha256: string }> | undefined;
  let clientFilename = "";
  let failure: unknown;

  const parsed = new Promise<void>((resolve, reject) => {
    const fail = (err: unknown) => {
      failure ??= err;
      reject(failure);
    };
    bb.on("field", (name, value, info) => {
      if (info.valueTruncated) {
        fail(new ImageError("invalid_upload", `form field ${name} is too long`, { field: name }));
        return;
      }
      fields[name] = value;
    });
    bb.on("file", (name, stream, info) => {
      if (name !== fileField || fileDone) {
        stream.resume();
        return;
      }
      clientFilename = safeDisplayName(info.filename);
      const hasher = new Hasher(opts.maxBytes, opts.spaceBytes);
      stream.once("limit", () => hasher.destroy(tooLarge(opts.maxBytes)));
      fileDone = (async () => {
        const fh = await open(tempPath, "wx", 0o640);
        tempCreated = true;
        opts.onTempFile?.(tempPath);
        // flush: fsync before close, because the row that follows promises a complete file.
        await pipeline(stream, hasher, fh.createWriteStream({ flush: true }));
        return hasher.result();
      })();
      fileDone.catch(fail);
    });
    bb.once("filesLimit", () => {});
    bb.once("partsLimit", () => fail(new ImageError("invalid_upload", "too many form parts")));
    bb.once("fieldsLimit", () => fail(new ImageError("invalid_upload", "too many form fields")));
    bb.on("error", (err) =>
      fail(
        failure ??
          (isAbort(err)
            ? new UploadAborted("the client closed the connection during the upload")
            : new ImageError(
                "invalid_upload",
                `malformed multipart request: ${(err as Error).message}`,
                {
                  field: "file",
                },
              )),
      ),
    );
    bb.once("close", () => resolve());
    body.on("error", (err) => {
      fail(new UploadAborted(`the upload stream broke: ${err.message}`));
      bb.destroy();
    });
    body.once("aborted", () =>
      fail(new UploadAborted("the client closed the connection during the upload")),
    );
  });

  body.pipe(bb);
  try {
    await parsed;
    if (!fileDone) {
      throw new ImageError("invalid_upload", `the form has no file in field ${fileField}`, {
        field: fileField,
      });
    }
    const sums = await fileDone;
    if (failure) throw failure;
    return { tempPath, clientFilename, fields, ...sums };
  } catch (err) {
    // The rest of the body is not read: the route answers and closes the connection
    // (reading on would mean receiving the remaining gigabytes only to throw them away).
    body.unpipe(bb);
    bb.destroy();
    // Let a write still in flight fail or finish before the file is removed.
    await fileDone?.catch(() => {});
    if (tempCreated) await unlink(tempPath).catch(() => {});
    opts.onTempFile?.("");
    throw mapError(failure ?? err, opts.maxBytes);
  }
}

/** Counts and hashes what passes through; refuses to pass more than the limit. */
class Hasher extends Transform {
  #md5 = createHash("md5");
  #sha256 = createHash("sha256");
  #bytes = 0;
  constructor(
    private readonly max: number,
    private readonly space: ReceiveUploadOptions["spaceBytes"],
  ) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#bytes += chunk.length;
    if (this.#bytes > this.max) {
      cb(tooLarge(this.max));
      return;
    }
    if (this.space && this.#bytes > this.space.bytes) {
      cb(noSpace(this.space.reason));
      return;
    }
    this.#md5.update(chunk);
    this.#sha256.update(chunk);
    cb(null, chunk);
  }
  result() {
    return { bytes: this.#bytes, md5: this.#md5.digest("hex"), sha256: this.#sha256.digest("hex") };
  }
}

/**
 * Whether an upload's Content-Length alone says it is over the limit: refused before a byte
 * is written (multipart framing adds a little, so some slack is allowed for it).
 */
export function declaredOverLimit(contentLength: string | undefined, maxBytes: number): boolean {
  const declared = Number(contentLength);
  return (
    contentLength !== undefined && Number.isFinite(declared) && declared > maxBytes + 1024 * 1024
  );
}

function tooLarge(max: number): ImageError {
  return new ImageError("too_large", `the image is larger than the upload limit of ${max} bytes`, {
    max_bytes: max,
  });
}

function noSpace(reason: string): ImageError {
  return new ImageError("storage_full", `upload refused: ${reason}`, {});
}

function isAbort(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  return (
    e.code === "ECONNRESET" ||
    e.code === "ERR_STREAM_PREMATURE_CLOSE" ||
    /unexpected end of form|aborted/i.test(e.message ?? "")
  );
}

function mapError(err: unknown, max: number): unknown {
  if (err instanceof ImageError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e.code === "ENOSPC" || e.code === "EDQUOT") {
    return new ImageError(
      "storage_full",
      "the image folder is full; free space or remove unused images",
      {},
    );
  }
  if (e.code === "EFBIG") return tooLarge(max);
  if (isAbort(err)) return new UploadAborted("the client closed the connection during the upload");
  return err;
}

/**
 * The client's file name for display only: no directories, no control characters (NUL
 * included), bounded length. The stored file is always named by us.
 */
export function safeDisplayName(name: string | undefined): string {
  const base = (name ?? "").split(/[/\\]/).pop() ?? "";
  const clean = [...base]
    .filter((ch) => {
      const c = ch.codePointAt(0)!;
      return c >= 0x20 && c !== 0x7f;
    })
    .join("")
    .trim()
    .slice(0, 255);
  return clean === "" || clean === "." || clean === ".." ? "upload" : clean;
}
