import { createHmac, randomBytes } from "node:crypto";
import t from "tap";
import {
  DEFAULT_BOOT_TOKEN_LIFETIME_MS,
  issueBootToken,
  verifyBootToken,
} from "../../../src/netboot/script/token.js";

const key = randomBytes(32);
const now = Date.UTC(2025, 0, 1, 12, 0, 0);
const expiresAt = now + DEFAULT_BOOT_TOKEN_LIFETIME_MS;
const mac = "52:54:00:12:34:56";

t.test("a token verifies for the client it was issued to, until it expires", async (t) => {
  const token = issueBootToken(key, { mac, expiresAt });
  t.match(token, /^[A-Za-z0-9_-]+$/, "URL-safe without escaping");
  t.equal(token.length, 36);
  t.same(verifyBootToken(key, token, { mac, now }), { ok: true, expiresAt });
  t.same(
    verifyBootToken(key, token, { mac: "52-54-00-12-34-56", now }),
    { ok: true, expiresAt },
    "any MAC spelling",
  );
  t.same(verifyBootToken(key, token, { mac, now: expiresAt - 1000 }), { ok: true, expiresAt });
  t.same(verifyBootToken(key, token, { mac, now: expiresAt }), { ok: false, reason: "expired" });
  t.same(verifyBootToken(key, token, { mac, now: new Date(expiresAt + 3600_000) }), {
    ok: false,
    reason: "expired",
  });
  t.equal(DEFAULT_BOOT_TOKEN_LIFETIME_MS, 300_000, "five minutes by default");
});

t.test("the token is bound to the MAC and, when given, the IP", async (t) => {
  const token = issueBootToken(key, { mac, expiresAt });
  t.same(verifyBootToken(key, token, { mac: "52:54:00:12:34:57", now }), {
    ok: false,
    reason: "wrong-mac",
  });
  t.same(verifyBootToken(key, token, { mac: "not a mac", now }), {
    ok: false,
    reason: "wrong-mac",
  });
  t.same(
    verifyBootToken(key, token, { mac, ip: "10.0.0.9", now }),
    { ok: true, expiresAt },
    "IP not bound",
  );

  const bound = issueBootToken(key, { mac, ip: "10.99.0.51", expiresAt });
  t.equal(bound.length, 42);
  t.same(verifyBootToken(key, bound, { mac, ip: "10.99.0.51", now }), { ok: true, expiresAt });
  t.same(verifyBootToken(key, bound, { mac, ip: "10.99.0.52", now }), {
    ok: false,
    reason: "wrong-ip",
  });
  t.same(
    verifyBootToken(key, bound, { mac, now }),
    { ok: false, reason: "wrong-ip" },
    "IP missing",
  );
  t.same(verifyBootToken(key, bound, { mac: "52:54:00:12:34:57", ip: "10.99.0.51", now }), {
    ok: false,
    reason: "wrong-mac",
  });
});

t.test("every altered character is caught", async (t) => {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (const token of [
    issueBootToken(key, { mac, expiresAt }),
    issueBootToken(key, { mac, ip: "10.99.0.51", expiresAt }),
  ]) {
    let caught = 0;
    for (let i = 0; i < token.length; i++) {
      for (const c of alphabet) {
        if (c === token[i]) continue;
        const altered = token.slice(0, i) + c + token.slice(i + 1);
        const r = verifyBootToken(key, altered, { mac, ip: "10.99.0.51", now });
        if (!r.ok && (r.reason === "tampered" || r.reason === "malformed")) caught++;
      }
    }
    t.equal(
      caught,
      token.length * (alphabet.length - 1),
      `all ${token.length * 63} one-character changes refused`,
    );
  }
});

t.test("changing the claims without the key is tampering", async (t) => {
  const token = issueBootToken(key, { mac, expiresAt });
  const raw = Buffer.from(token, "base64url");
  // Push the expiry (bytes 1..4, big-endian seconds) a day later.
  raw.writeUInt32BE(raw.readUInt32BE(1) + 86400, 1);
  t.same(verifyBootToken(key, raw.toString("base64url"), { mac, now }), {
    ok: false,
    reason: "tampered",
  });
  // Put another MAC (bytes 5..10) in.
  const other = Buffer.from(token, "base64url");
  other.set([0x52, 0x54, 0x00, 0x99, 0x99, 0x99], 5);
  t.same(verifyBootToken(key, other.toString("base64url"), { mac: "52:54:00:99:99:99", now }), {
    ok: false,
    reason: "tampered",
  });
  t.same(
    verifyBootToken(randomBytes(32), token, { mac, now }),
    { ok: false, reason: "tampered" },
    "other key",
  );
});

t.test("malformed tokens", async (t) => {
  const token = issueBootToken(key, { mac, expiresAt });
  for (const bad of [
    "",
    "abc",
    `${token}=`,
    `${token}A`,
    token.slice(1),
    "!".repeat(36),
    `${token.slice(0, 35)}+`,
  ]) {
    t.same(
      verifyBootToken(key, bad, { mac, now }),
      { ok: false, reason: "malformed" },
      JSON.stringify(bad),
    );
  }
  const raw = Buffer.from(token, "base64url");
  raw[0] = 9;
  t.same(
    verifyBootToken(key, raw.toString("base64url"), { mac, now }),
    { ok: false, reason: "malformed" },
    "version",
  );
  // 42 characters carry 31.5 bytes: the spare low bits of the last one must be zero.
  const bound = issueBootToken(key, { mac, ip: "10.0.0.1", expiresAt });
  const last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const idx = last.indexOf(bound.at(-1) as string);
  const sibling = bound.slice(0, -1) + last[idx ^ 1];
  t.same(
    Buffer.from(sibling, "base64url"),
    Buffer.from(bound, "base64url"),
    "decodes to the same bytes",
  );
  t.same(verifyBootToken(key, sibling, { mac, ip: "10.0.0.1", now }), {
    ok: false,
    reason: "malformed",
  });
});

t.test("the tag is HMAC-SHA256 over the claims, truncated to 128 bits", async (t) => {
  const token = issueBootToken(key, { mac, ip: "10.99.0.51", expiresAt });
  const raw = Buffer.from(token, "base64url");
  const body = raw.subarray(0, 15);
  t.equal(body.readUInt32BE(1), expiresAt / 1000, "expiry in seconds");
  t.same([...body.subarray(5, 11)], [0x52, 0x54, 0x00, 0x12, 0x34, 0x56], "MAC bytes");
  t.same([...body.subarray(11, 15)], [10, 99, 0, 51], "IPv4 bytes");
  const full = createHmac("sha256", key)
    .update("bootfleet boot-script token\0")
    .update(body)
    .digest();
  t.same(raw.subarray(15), full.subarray(0, 16));
});

t.test("issuing refuses bad input", async (t) => {
  t.throws(() => issueBootToken(randomBytes(16), { mac, expiresAt }), TypeError, "short key");
  t.throws(
    () => issueBootToken(key, { mac: "x", expiresAt }),
    { name: "ScriptValueError", message: /mac/ },
    "bad MAC",
  );
  t.throws(
    () => issueBootToken(key, { mac, ip: "10.0.0", expiresAt }),
    { name: "ScriptValueError", message: /ip/ },
    "bad IP",
  );
  t.throws(() => issueBootToken(key, { mac, expiresAt: Number.NaN }), RangeError);
  t.throws(() => issueBootToken(key, { mac, expiresAt: 2 ** 33 * 1000 }), RangeError);
});
