import type { RateLimitClass, RateLimits } from "./route.js";

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
