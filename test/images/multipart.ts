import { Readable } from "node:stream";

export interface MultipartPart {
  name: string;
  /** For a file part: the file name in Content-Disposition. */
  filename?: string;
  value: string | Buffer | (() => AsyncIterable<Buffer>);
}

/**
 * A multipart/form-data body (RFC 7578) built by hand, streamed part by part so a test can
 * send more bytes than it ever holds, and cut the stream wherever it wants.
 */
export function multipart(parts: MultipartPart[], opts: { failAfterBytes?: number } = {}) {
  const boundary = `----bftest${process.pid}${Date.now().toString(16)}`;
  async function* gen(): AsyncGenerator<Buffer> {
    for (const p of parts) {
      const disp =
        p.filename !== undefined
          ? `form-data; name="${p.name}"; filename="${p.filename}"`
          : `form-data; name="${p.name}"`;
      const type = p.filename !== undefined ? "Content-Type: application/octet-stream\r\n" : "";
      yield Buffer.from(`--${boundary}\r\nContent-Disposition: ${disp}\r\n${type}\r\n`);
      if (typeof p.value === "function") {
        for await (const chunk of p.value()) yield chunk;
      } else yield Buffer.from(p.value);
      yield Buffer.from("\r\n");
    }
    yield Buffer.from(`--${boundary}--\r\n`);
  }
  let sent = 0;
  async function* cut(): AsyncGenerator<Buffer> {
    for await (const chunk of gen()) {
      if (opts.failAfterBytes !== undefined && sent + chunk.length > opts.failAfterBytes) {
        yield chunk.subarray(0, opts.failAfterBytes - sent);
        throw Object.assign(new Error("aborted"), { code: "ECONNRESET" });
      }
      sent += chunk.length;
      yield chunk;
    }
  }
  return {
    headers: { "content-type": `multipart/form-data; boundary=${boundary}` },
    body: Readable.from(cut(), { objectMode: false }),
  };
}

/** `total` bytes of a cheap, position-dependent pattern, in 1 MiB chunks. */
export function pattern(total: number, chunk = 1 << 20): () => AsyncIterable<Buffer> {
  return async function* () {
    let off = 0;
    while (off < total) {
      const n = Math.min(chunk, total - off);
      const b = Buffer.alloc(n);
      for (let i = 0; i + 4 <= n; i += 4) b.writeUInt32LE((off + i) >>> 0, i);
      off += n;
      yield b;
    }
  };
}
