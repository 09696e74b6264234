/**
 * The IPv4 address the proxy-DHCP last saw each MAC use (the source of its port-4011
 * request, or its ciaddr). A boot script holds the machine's CHAP secret, so the HTTP
 * route serves it only to that address. Bounded: the oldest entries go first, so a flood
 * of random MACs cannot grow it without end.
 */
export class ClientAddresses {
  private readonly byMac = new Map<string, { ip: string; at: number }>();

  constructor(
    private readonly maxEntries = 10_000,
    private readonly clock: () => number = Date.now,
  ) {}

  record(mac: string, ip: string): void {
    if (ip === "0.0.0.0") return;
    this.byMac.delete(mac);
    this.byMac.set(mac, { ip, at: this.clock() });
    if (this.byMac.size > this.maxEntries) {
      const oldest = this.byMac.keys().next().value;
      if (oldest !== undefined) this.byMac.delete(oldest);
    }
  }

  get(mac: string): string | undefined {
    return this.byMac.get(mac)?.ip;
  }
}
