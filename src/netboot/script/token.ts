// The token in the script URL that the proxy-DHCP hands a client. A sanboot script carries
// the machine's CHAP secret, so the HTTP route must not hand it to whoever names a MAC.
//
// What the token does:
//   - it proves the URL came from this server (HMAC with the boot key) for this MAC, so
//     nobody can make one up or change its MAC or expiry;
//   - it expires (5 minutes by default), so one copied later from a log, a proxy or a
//     capture is dead;
//   - it is unique (a random nonce), so the route can let a URL that served a secret-
//     carrying script work once (UsedTokens below).
// What it does not do: say who fetches it. The proxy's replies can be broadcast and a
// 4011 request can name any MAC, so anyone on the LAN can obtain a valid token for any
// MAC. The route therefore also checks the fetching peer itself (boot-routes.ts: the
// kernel's neighbour table, or a routed machine's fixed address). No address is bound
// into the token: the proxy would have to learn it from what a packet claims (ciaddr,
// the source of a 4011 request), which is exactly what an attacker controls.
//
// Lifetime: the token is issued for iPXE's own DHCP exchange, and iPXE fetches the script
// seconds later; the 5 minutes cover slow links (spanning tree listening, ~30-50 s),
// HTTP retries and a slow UEFI network stack, while keeping a leaked token short-lived.
// Scripts that wait for a long time (discovery) ask DHCP again for a fresh token.
//
// Layout (base64url, no padding): version | expiry (u32 seconds) | MAC (6) | nonce (6) |
// HMAC-SHA256 tag truncated to 16 bytes. 128 bits is half the hash output, the truncation
// RFC 2104 section 5 recommends as the floor; the token is 44 characters. The MAC rides in
// the clear (it is no secret on a LAN) so that a refusal can say "wrong MAC" rather than
// only "tampered".

import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { macAddress } from "./values.js";

export const DEFAULT_BOOT_TOKEN_LIFETIME_MS = 5 * 60_000;

const VERSION = 3;
const NONCE_BYTES = 6;
const BODY_BYTES = 1 + 4 + 6 + NONCE_BYTES;
const TAG_BYTES = 16;
const MIN_KEY_BYTES = 32;
const DOMAIN = Buffer.from("bootfleet boot-script token\0", "utf8");

export interface BootTokenClaims {
  mac: string;
  /** Milliseconds since the epoch (or a Date); kept with one-second precision. */
  expiresAt: number | Date;
}

export interface BootTokenRequest {
  /** The MAC in the script's path. */
  mac: string;
  /** Milliseconds since the epoch (or a Date). */
  now: number | Date;
}

export type BootTokenFailure = "malformed" | "tampered" | "wrong-mac" | "expired";
export type BootTokenResult =
  | { ok: true; expiresAt: number }
  | { ok: false; reason: BootTokenFailure };

function keyBytes(key: Uint8Array): Uint8Array {
  if (!(key instanceof Uint8Array) || key.length < MIN_KEY_BYTES) {
    throw new TypeError(`boot token key must be at least ${MIN_KEY_BYTES} bytes`);
  }
  return key;
}

function macBytes(mac: string): Buffer {
  return Buffer.from(macAddress("mac", mac).replaceAll(":", ""), "hex");
}

function ms(t: number | Date): number {
  return t instanceof Date ? t.getTime() : t;
}

function tag(key: Uint8Array, body: Buffer): Buffer {
  return createHmac("sha256", key).update(DOMAIN).update(body).digest().subarray(0, TAG_BYTES);
}

/** Issues a URL-safe token binding a boot script to a client's MAC until expiresAt; never the same twice. */
export function issueBootToken(key: Uint8Array, claims: BootTokenClaims): string {
  const k = keyBytes(key);
  const expires = Math.floor(ms(claims.expiresAt) / 1000);
  if (!Number.isInteger(expires) || expires < 0 || expires > 0xffffffff) {
    throw new RangeError("expiresAt is out of range");
  }
  const head = Buffer.alloc(5);
  head.writeUInt8(VERSION, 0);
  head.writeUInt32BE(expires, 1);
  const body = Buffer.concat([head, macBytes(claims.mac), randomBytes(NONCE_BYTES)]);
  return Buffer.concat([body, tag(k, body)]).toString("base64url");
}

/** Checks a token against the MAC it is presented for. Never throws for a bad token. */
export function verifyBootToken(
  key: Uint8Array,
  token: string,
  request: BootTokenRequest,
): BootTokenResult {
  const k = keyBytes(key);
  if (typeof token !== "string" || !/^[A-Za-z0-9_-]{44}$/.test(token)) {
    return { ok: false, reason: "malformed" };
  }
  const raw = Buffer.from(token, "base64url");
  // Node's decoder ignores the spare low bits of the last character; refusing non-canonical
  // spellings keeps one token to one string.
  if (raw.toString("base64url") !== token) return { ok: false, reason: "malformed" };
  if (raw[0] !== VERSION || raw.length !== BODY_BYTES + TAG_BYTES) {
    return { ok: false, reason: "malformed" };
  }
  const body = raw.subarray(0, BODY_BYTES);
  if (!timingSafeEqual(raw.subarray(BODY_BYTES), tag(k, body))) {
    return { ok: false, reason: "tampered" };
  }
  let askingMac: Buffer;
  try {
    askingMac = macBytes(request.mac);
  } catch {
    return { ok: false, reason: "wrong-mac" };
  }
  if (!askingMac.equals(body.subarray(5, 11))) return { ok: false, reason: "wrong-mac" };
  const expiresAt = body.readUInt32BE(1) * 1000;
  if (ms(request.now) >= expiresAt) return { ok: false, reason: "expired" };
  return { ok: true, expiresAt };
}

/**
 * Tokens that have served a secret-carrying script: such a URL works once. Entries are
 * kept until their token expires (after that the token is refused anyway). Bounded: only
 * tokens this server issued and its route accepted get here, and when full the entry
 * closest to expiry goes first.
 */
export class UsedTokens {
  private readonly until = new Map<string, number>();

  constructor(
    private readonly maxEntries = 100_000,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Marks the token used; false when it already was. */
  use(token: string, expiresAt: number): boolean {
    const now = this.clock();
    const seen = this.until.get(token);
    if (seen !== undefined && seen > now) return false;
    this.sweep(now);
    this.until.set(token, expiresAt);
    return true;
  }

  private sweep(now: number): void {
    if (this.until.size < this.maxEntries) return;
    for (const [token, expiresAt] of this.until) if (expiresAt <= now) this.until.delete(token);
    // Still full: tokens are issued with one lifetime, so insertion order is expiry order.
    while (this.until.size >= this.maxEntries) {
      const oldest = this.until.keys().next().value;
      if (oldest === undefined) break;
      this.until.delete(oldest);
    }
  }
}
