import { ApiError } from "./errors.js";

/**
 * The largest JSON body a route accepts unless it declares its own `maxBodyBytes`.
 * Every JSON document of the API fits in a few KiB; without a cap, one POST to the
 * public login route could make the daemon buffer hundreds of megabytes.
 */
export const DEFAULT_MAX_BODY_BYTES = 64 * 1024;

function tooLarge(max: number, what: string): ApiError {
  return new ApiError(
    413,
    "payload_too_large",
    `request body too large: ${what}; this route accepts at most ${max} bytes of JSON`,
    { max_bytes: max },
  );
}

/**
 * Reads a request body as UTF-8 text, refusing it (413) as soon as it is known to be
 * larger than `max`: from Content-Length before reading anything, and by counting the
 * bytes as they arrive (a chunked body has no Content-Length). The rest of a refused
 * body is left unread; the HTTP server drains or closes the connection after the 413.
 */
export async function readBoundedText(req: Request, max: number): Promise<string> {
  const declared = req.headers.get("content-length");
  if (declared !== null && /^\d+$/.test(declared.trim()) && Number(declared) > max) {
    throw tooLarge(max, `Content-Length is ${declared}`);
  }
  if (!req.body) return "";
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > max) throw tooLarge(max, `more than ${max} bytes were sent`);
      chunks.push(value);
    }
  } finally {
    // Not cancel(): that would destroy the socket before the 413 is written.
    reader.releaseLock();
  }
  return Buffer.concat(chunks, total).toString("utf8");
}
