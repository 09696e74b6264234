import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { extname } from "node:path";
import { gzipSync } from "node:zlib";
import type { Context } from "hono";

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".woff2": "font/woff2",
  ".json": "application/json",
};

/**
 * A static file held in memory. Its gzip form and validator are made when first sent, not
 * when read: the daemon reads the dashboard's files at start, and gzip -9 of its bundle
 * (~20 ms of CPU, bench/footprint) was on the way to the first request.
 */
export class Asset {
  readonly body: Uint8Array<ArrayBuffer>;
  readonly type: string;
  #gzip: Uint8Array<ArrayBuffer> | undefined | null = null;
  #etag: string | undefined;

  constructor(name: string, bytes: Uint8Array) {
    this.body = new Uint8Array(bytes);
    this.type = TYPES[extname(name)] ?? "application/octet-stream";
  }

  /** The gzip form, or undefined where compression does not pay (SVG icons of a few hundred bytes). */
  get gzip(): Uint8Array<ArrayBuffer> | undefined {
    if (this.#gzip === null) {
      const zipped = gzipSync(this.body, { level: 9 });
      this.#gzip = zipped.length < this.body.length * 0.9 ? new Uint8Array(zipped) : undefined;
    }
    return this.#gzip;
  }

  get etag(): string {
    this.#etag ??= `"${createHash("sha256").update(this.body).digest("base64url").slice(0, 22)}"`;
    return this.#etag;
  }
}

/** An asset from bytes; `name` gives the content type by its extension. */
export function assetOf(name: string, bytes: Uint8Array): Asset {
  return new Asset(name, bytes);
}

export function loadAsset(path: string): Asset {
  return assetOf(path, readFileSync(path));
}

/** Answers with the asset (304 on a matching etag, gzip when the client takes it). */
export function sendAsset(c: Context, a: Asset, cacheControl: string, csp: string): Response {
  const headers: Record<string, string> = {
    "content-type": a.type,
    "cache-control": cacheControl,
    etag: a.etag,
    vary: "accept-encoding",
    "content-security-policy": csp,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
  };
  if (c.req.header("if-none-match") === a.etag) return c.body(null, 304, headers);
  if (a.gzip && /\bgzip\b/.test(c.req.header("accept-encoding") ?? "")) {
    headers["content-encoding"] = "gzip";
    return c.body(a.gzip, 200, headers);
  }
  return c.body(a.body, 200, headers);
}
