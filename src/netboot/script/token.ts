// The token in the script URL that the proxy-DHCP hands a client, binding the script to
// the client that asked. A sanboot script carries the machine's CHAP secret, so the HTTP
// route must not hand it to whoever names a MAC address.
//
// What it protects against:
//   - another host on the LAN asking for a machine's script: without a token that the
//     proxy issued for that MAC (and IP, when bound), the route refuses;
//   - a token copied later from a log, a proxy or a capture: it expires (5 minutes by
//     default), and its MAC, IP and expiry cannot be changed without the key;
// What it does not protect against: a host on the same segment that captures the proxy's
// reply (it may be broadcast) and, within the lifetime, fetches the script from the same
// IP (spoofing it). The verifier should take the IP from the connection, not the URL, and
// the MAC from the neighbour table when it can. The target's per-machine initiator ACL and
// CHAP secret remain the protection of the disk itself.
//
// Lifetime: the token is issued for iPXE's own DHCP exchange, and iPXE fetches the script
// seconds later; the 5 minutes cover slow links (spanning tree listening, ~30-50 s),
// HTTP retries and a slow UEFI network stack, while keeping a leaked token short-lived.
// Scripts that wait for a long time (discovery) ask DHCP again for a fresh token.
//
// Layout (base64url, no padding): version | expiry (u32 seconds) | MAC (6) | [IPv4 (4)] |
// HMAC-SHA256 tag truncated to 16 bytes. 128 bits is half the hash output, the truncation
// RFC 2104 section 5 recommends as the floor; it keeps the token at 36 or 42 characters.
// The MAC and IP ride in the clear (they are no secret on a LAN) so that a refusal can say
// "wrong MAC" rather than only "tampered".

import { createHmac, timingSafeEqual } from "node:crypto";
import { ipv4, macAddress } from "./values.js";

export const DEFAULT_BOOT_TOKEN_LIFETIME_MS = 5 * 60_000;

const VERSION_MAC = 1;
const VERSION_MAC_IP = 2;
const TAG_BYTES = 16;
const MIN_KEY_BYTES = 32;
const DOMAIN = Buffer.from("bootfleet boot-script token\0", "utf8");

export interface BootTokenClaims {
  mac: string;
  /** Bind to this IPv4 too; verification then requires the same address. */
  ip?: string;
  /** Milliseconds since the epoch (or a Date); kept with one-second precision. */
  expiresAt: number | Date;
}

export interface BootTokenRequest {
  /** The MAC of the client asking for the script. */
  mac: string;
  /** The address the request came from; required when the token is bound to an IP. */
  ip?: string;
  /** Milliseconds since the epoch (or a Date). */
  now: number | Date;
}

export type BootTokenFailure = "malformed" | "tampered" | "wrong-mac" | "wrong-ip" | "expired";
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

function ipBytes(ip: string): Buffer {
  return Buffer.from(ipv4("ip", ip).split(".").map(Number));
}

function ms(t: number | Date): number {
  return t instanceof Date ? t.getTime() : t;
}

function tag(key: Uint8Array, body: Buffer): Buffer {
  return createHmac("sha256", key).update(DOMAIN).update(body).digest().subarray(0, TAG_BYTES);
}

/** Issues a URL-safe token binding a boot script to a client's MAC (and IP) until expiresAt. */
export function issueBootToken(key: Uint8Array, claims: BootTokenClaims): string {
  const k = keyBytes(key);
  const expires = Math.floor(ms(claims.expiresAt) / 1000);
  if (!Number.isInteger(expires) || expires < 0 || expires > 0xffffffff) {
    throw new RangeError("expiresAt is out of range");
  }
  const head = Buffer.alloc(5);
  head.writeUInt8(claims.ip === undefined ? VERSION_MAC : VERSION_MAC_IP, 0);
  head.writeUInt32BE(expires, 1);
  const parts = [head, macBytes(claims.mac)];
  if (claims.ip !== undefined) parts.push(ipBytes(claims.ip));
  const body = Buffer.concat(parts);
  return Buffer.concat([body, tag(k, body)]).toString("base64url");
}

/** Checks a token against the client that presents it. Never throws for a bad token. */
export function verifyBootToken(
  key: Uint8Array,
  token: string,
  request: BootTokenRequest,
): BootTokenResult {
  const k = keyBytes(key);
  if (typeof token !== "string" || !/^[A-Za-z0-9_-]{36}(?:[A-Za-z0-9_-]{6})?$/.test(token)) {
    return { ok: false, reason: "malformed" };
  }
  const raw = Buffer.from(token, "base64url");
  // Node's decoder ignores the spare low bits of the last character; refusing non-canonical
  // spellings keeps one token to one string.
  if (raw.toString("base64url") !== token) return { ok: false, reason: "malformed" };
  const version = raw[0];
  const bodyLength = version === VERSION_MAC ? 11 : version === VERSION_MAC_IP ? 15 : -1;
  // base64url of 27 or 31 bytes is 36 or 42 characters; a mismatch is a cut or padded token.
  if (bodyLength < 0 || raw.length !== bodyLength + TAG_BYTES) {
    return { ok: false, reason: "malformed" };
  }
  const body = raw.subarray(0, bodyLength);
  if (!timingSafeEqual(raw.subarray(bodyLength), tag(k, body))) {
    return { ok: false, reason: "tampered" };
  }
  let askingMac: Buffer;
  try {
    askingMac = macBytes(request.mac);
  } catch {
    return { ok: false, reason: "wrong-mac" };
  }
  if (!askingMac.equals(body.subarray(5, 11))) return { ok: false, reason: "wrong-mac" };
  if (version === VERSION_MAC_IP) {
    let askingIp: Buffer | undefined;
    try {
      askingIp = request.ip === undefined ? undefined : ipBytes(request.ip);
    } catch {
      askingIp = undefined;
    }
    if (askingIp === undefined || !askingIp.equals(body.subarray(11, 15))) {
      return { ok: false, reason: "wrong-ip" };
    }
  }
  const expiresAt = body.readUInt32BE(1) * 1000;
  if (ms(request.now) >= expiresAt) return { ok: false, reason: "expired" };
  return { ok: true, expiresAt };
}
