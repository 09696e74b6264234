import type { Store } from "../../store/index.js";

/**
 * Per-account back-off of failed logins. The address rate limit stops one host; an
 * attacker with many addresses (an IPv6 /48, a botnet) is stopped here: after
 * FREE_FAILURES wrong passwords in a row the account refuses logins for a while, doubling
 * with each further failure up to MAX_LOCK_MS. A right password resets the count.
 * Refusing during the lock even a right password is the point (guessing stays slow), and
 * the lock is short enough that a locked-out owner only has to wait.
 */
export const FREE_FAILURES = 5;
export const FIRST_LOCK_MS = 30_000;
export const MAX_LOCK_MS = 15 * 60_000;

export class LoginBackoff {
  constructor(
    private readonly store: Store,
    private readonly clock: () => number,
  ) {}

  /** Milliseconds the account is still locked for (0: a login may be tried). */
  lockedFor(userId: number): number {
    const until = this.store.users.loginFailures(userId).login_locked_until;
    return until ? Math.max(0, Date.parse(until) - this.clock()) : 0;
  }

  /** A wrong password: counts it and, past the free ones, locks the account. */
  failed(userId: number): { failures: number; lockedMs: number } {
    const failures = this.store.users.loginFailures(userId).failed_logins + 1;
    const over = failures - FREE_FAILURES;
    const lockedMs = over >= 0 ? Math.min(MAX_LOCK_MS, FIRST_LOCK_MS * 2 ** Math.min(over, 20)) : 0;
    const until = lockedMs > 0 ? new Date(this.clock() + lockedMs).toISOString() : null;
    this.store.users.setLoginFailures(userId, failures, until);
    return { failures, lockedMs };
  }

  succeeded(userId: number): void {
    const f = this.store.users.loginFailures(userId);
    if (f.failed_logins > 0 || f.login_locked_until)
      this.store.users.setLoginFailures(userId, 0, null);
  }
}
