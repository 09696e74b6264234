import { randomBytes } from "node:crypto";
import { chmodSync, closeSync, openSync, readFileSync, statSync, writeSync } from "node:fs";

const KEY_BYTES = 32;

/**
 * The HS256 signing key of the API's tokens: made at first start, kept 0600 in the data
 * folder, reused after a restart so tokens stay valid. A key file that is readable by
 * others is tightened to 0600 again; one of the wrong size is refused rather than used.
 */
export function loadOrCreateSigningKey(path: string): Uint8Array {
  try {
    const fd = openSync(path, "wx", 0o600);
    try {
      writeSync(fd, randomBytes(KEY_BYTES).toString("base64url"));
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  if ((statSync(path).mode & 0o077) !== 0) chmodSync(path, 0o600);
  const key = Buffer.from(readFileSync(path, "utf8").trim(), "base64url");
  if (key.length !== KEY_BYTES) {
    throw new Error(
      `signing key ${path} is damaged (expected ${KEY_BYTES} bytes, found ${key.length}); delete it to make a new one (every login is then ended)`,
    );
  }
  return new Uint8Array(key);
}
