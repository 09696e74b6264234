import { createHmac, randomBytes } from "node:crypto";
import t from "tap";
import {
  DEFAULT_BOOT_TOKEN_LIFETIME_MS,
  issueBootToken,
  UsedTokens,
  verifyBootToken,
} from "../../../src/netboot/script/token.js";

const key = randomBytes(32);
const now = Date.UTC(2025, 0, 1, 12, 0, 0);
const expiresAt = now + DEFAULT_BOOT_TOKEN_LIFETIME_MS;
const mac = "52:54:00:12:34:56";

t.test("a token verifies for the client it was issued to, until it expires", async (t) => {
  const token = issueBootToken(key, { mac, expiresAt });
  t.match(token, /^[A-Za-z0-9_-]+$/, "URL-safe without escaping");
  t.equal(token.length, 44);
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

t.test("the token is bound to the MAC, and never issued twice", async (t) => {
  const token = issueBootToken(key, { mac, expiresAt });
  t.same(verifyBootToken(key, token, { mac: "52:54:00:12:34:57", now }), {
    ok: false,
    reason: "wrong-mac",
  });
  t.same(verifyBootToken(key, token, { mac: "not a mac", now }), {
    ok: false,
    reason: "wrong-mac",
  });
  const again = issueBootToken(key, { mac, expiresAt });
  t.not(again, token, "same claims, another token (a nonce)");
  t.same(verifyBootToken(key, again, { mac, now }), { ok: true, expiresAt });
});

t.test("a used token is refused until it expires; the set stays bounded", async (t) => {
  let clock = now;
  const used = new UsedTokens(3, () => clock);
  t.equal(used.use("a", now + 1000), true, "first use");
  t.equal(used.use("a", now + 1000), false, "second use refused");
  t.equal(used.use("b", now + 2000), true);
  t.equal(used.use("c", now + 3000), true);
  t.equal(used.use("d", now + 4000), true, "full: the one closest to expiry makes room");
  t.equal(used.use("d", now + 4000), false);
  clock = now + 5000;
  t.equal(used.use("d", now + 4000), true, "an expired entry no longer counts");
});

t.test("every altered character is caught", async (t) => {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (const token of [issueBootToken(key, { mac, expiresAt })]) {
    let caught = 0;
    for (let i = 0; i < token.length; i++) {
      for (const c of alphabet) {
        if (c === token[i]) continue;
        const altered = token.slice(0, i) + c + token.slice(i + 1);
        const r = verifyBootToken(key, altered, { mac, now });
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
    "!".repeat(44),
    `${token.slice(0, 43)}+`,
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
  // 44 characters carry 33 bytes exactly; a 36-character token of the old layout is malformed.
  t.same(verifyBootToken(key, "A".repeat(36), { mac, now }), { ok: false, reason: "malformed" });
  // Cut to 43 characters (32.25 bytes): the spare low bits of the last one must be zero.
  const bound = token.slice(0, 43);
  const last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const idx = last.indexOf(bound.at(-1) as string);
  const sibling = bound.slice(0, -1) + last[idx ^ 1];
  t.same(
    Buffer.from(sibling, "base64url"),
    Buffer.from(bound, "base64url"),
    "decodes to the same bytes",
  );
  t.same(verifyBootToken(key, sibling, { mac, now }), {
    ok: false,
    reason: "malformed",
  });
});

t.test("the tag is HMAC-SHA256 over the claims, truncated to 128 bits", async (t) => {
  const token = issueBootToken(key, { mac, expiresAt });
  const raw = Buffer.from(token, "base64url");
  const body = raw.subarray(0, 17);
  t.equal(body[0], 3, "version");
  t.equal(body.readUInt32BE(1), expiresAt / 1000, "expiry in seconds");
  t.same([...body.subarray(5, 11)], [0x52, 0x54, 0x00, 0x12, 0x34, 0x56], "MAC bytes");
  const full = createHmac("sha256", key)
    .update("bootfleet boot-script token\0")
    .update(body)
    .digest();
  t.same(raw.subarray(17), full.subarray(0, 16));
});

t.test("issuing refuses bad input", async (t) => {
  t.throws(() => issueBootToken(randomBytes(16), { mac, expiresAt }), TypeError, "short key");
  t.throws(
    () => issueBootToken(key, { mac: "x", expiresAt }),
    { name: "ScriptValueError", message: /mac/ },
    "bad MAC",
  );
  t.throws(() => issueBootToken(key, { mac, expiresAt: Number.NaN }), RangeError);
  t.throws(() => issueBootToken(key, { mac, expiresAt: 2 ** 33 * 1000 }), RangeError);
});
