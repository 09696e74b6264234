import { isIPv6 } from "node:net";
import type { RateLimitClass, RateLimits } from "./route.js";

/**
 * Whom an unauthenticated request is counted against: an IPv4 address, or the /64 of an
 * IPv6 one (a single host is handed a whole /64 and can pick any address in it, so
 * counting per address would give it 2^64 fresh budgets). IPv4-mapped IPv6
 * (::ffff:192.0.2.1, what a dual-stack socket reports) counts as the IPv4 address.
 */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!isIPv6(address)) return address;
  return `${expandIPv6(address).slice(0, 4).join(":")}::/64`;
}

/** The eight 16-bit groups of an IPv6 address, lowercase, without leading zeros. */
function expandIPv6(address: string): string[] {
  const bare = address.split("%")[0]!.toLowerCase();
  const [head, tail] = bare.includes("::") ? bare.split("::") : [bare, undefined];
  const parse = (s: string | undefined) => (s ? s.split(":") : []);
  let left = parse(head);
  let right = parse(tail);
  // An embedded IPv4 tail (::ffff:1.2.3.4, 64:ff9b::1.2.3.4) is two groups.
  const last = (right.length ? right : left).at(-1);
  if (last?.includes(".")) {
    const [a, b, c, d] = last.split(".").map(Number) as [number, number, number, number];
    const groups = [((a << 8) | b).toString(16), ((c << 8) | d).toString(16)];
    if (right.length) right = [...right.slice(0, -1), ...groups];
    else left = [...left.slice(0, -1), ...groups];
  }
  const zeros = tail === undefined ? [] : Array(8 - left.length - right.length).fill("0");
  return [...left, ...zeros, ...right].map((g) => Number.parseInt(g, 16).toString(16));
}

export interface RateDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Epoch seconds at which the window ends. */
  reset: number;
  windowSeconds: number;
}

/** Above this many live buckets, expired ones are swept before a new one is added. */
const SWEEP_AT = 10_000;

/**
 * Fixed-window counters per (class, caller). The caller is the user when the request
 * carries a valid token, else the client address. Memory stays bounded: expired
 * windows are swept whenever the table grows large.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { start: number; count: number; windowMs: number }>();

  constructor(
    private readonly rules: RateLimits,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Whether a class is counted at all: a limit of 0 turns it off (`[api] rate_limit_per_minute`). */
  counts(cls: Exclude<RateLimitClass, "none">): boolean {
    return this.rules[cls].limit > 0;
  }

  hit(cls: Exclude<RateLimitClass, "none">, caller: string): RateDecision {
    const rule = this.rules[cls];
    const windowMs = rule.windowSeconds * 1000;
    const now = this.clock();
    const start = Math.floor(now / windowMs) * windowMs;
    const key = `${cls}|${caller}`;
    let b = this.buckets.get(key);
    if (!b || b.start !== start) {
      if (!b && this.buckets.size >= SWEEP_AT) this.sweep(now);
      b = { start, count: 0, windowMs };
      this.buckets.set(key, b);
    }
    const allowed = b.count < rule.limit;
    if (allowed) b.count++;
    return {
      allowed,
      limit: rule.limit,
      remaining: Math.max(0, rule.limit - b.count),
      reset: Math.ceil((start + windowMs) / 1000),
      windowSeconds: rule.windowSeconds,
    };
  }

  get size(): number {
    return this.buckets.size;
  }

  private sweep(now: number) {
    for (const [k, b] of this.buckets) if (b.start + b.windowMs <= now) this.buckets.delete(k);
  }
}
