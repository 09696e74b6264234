/**
 * How many unknown MACs the proxy-DHCP may register, so a flood of random MACs can fill
 * neither the database nor the log: at most `perMinute` new machines a minute, and at most
 * `maxDiscovered` machines waiting in `discovered` at once. A refused client still boots
 * into the discovery script; it is just not written down until there is room.
 */
export class DiscoveryLimiter {
  private windowStart = 0;
  private inWindow = 0;

  constructor(
    private readonly perMinute: number,
    private readonly maxDiscovered: number,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Whether one more machine may be registered now, given how many are waiting. */
  allow(discoveredNow: number): boolean {
    if (discoveredNow >= this.maxDiscovered) return false;
    const now = this.clock();
    if (now - this.windowStart >= 60_000) {
      this.windowStart = now;
      this.inWindow = 0;
    }
    if (this.inWindow >= this.perMinute) return false;
    this.inWindow++;
    return true;
  }
}
