// A fixed-window limiter for log lines: a flood of bad requests must not fill the journal, but the
// first lines of a burst and a count of what was dropped still reach the operator.

export interface LogLimiter {
  /** Whether to log now; `suppressed` is how many lines were dropped since the last one allowed. */
  take(): { allowed: boolean; suppressed: number };
}

export function createLogLimiter(opts: {
  max: number;
  intervalMs: number;
  now?: () => number;
}): LogLimiter {
  const now = opts.now ?? Date.now;
  let windowStart = Number.NEGATIVE_INFINITY;
  let used = 0;
  let suppressed = 0;
  return {
    take() {
      const t = now();
      if (t - windowStart >= opts.intervalMs) {
        windowStart = t;
        used = 0;
      }
      if (used >= opts.max) {
        suppressed++;
        return { allowed: false, suppressed: 0 };
      }
      used++;
      const dropped = suppressed;
      suppressed = 0;
      return { allowed: true, suppressed: dropped };
    },
  };
}
