import { readFileSync } from "node:fs";

/**
 * The MAC behind an IPv4 address, from the kernel's ARP table (/proc/net/arp). A TFTP or
 * HTTP request carries only the client's address; the server has just exchanged packets
 * with it (for TCP, the handshake made the kernel resolve it), so
 * the kernel knows the MAC that answers for that address on the link. This is the one fact
 * about a client the server learns from its own network stack rather than from what a
 * packet claims. A routed client has no entry (its packets come from the router's MAC):
 * undefined then, and undefined too when two interfaces disagree about the address.
 */
export type MacForIp = (ip: string) => Promise<string | undefined>;

/** /proc/net/arp parsed once per read: each address's complete entries' MACs. */
export function arpTableByAddress(text: string): Map<string, string[]> {
  const byAddress = new Map<string, string[]>();
  for (const line of text.split("\n").slice(1)) {
    const [address, , flags, mac] = line.trim().split(/\s+/);
    // Flags 0x0 is an incomplete entry (no answer yet).
    if (!address || !mac || flags === "0x0" || mac === "00:00:00:00:00:00") continue;
    const macs = byAddress.get(address) ?? [];
    const lower = mac.toLowerCase();
    if (!macs.includes(lower)) macs.push(lower);
    byAddress.set(address, macs);
  }
  return byAddress;
}

/**
 * A reader of the ARP table: lookups asked in one turn of the event loop share one read,
 * made right after that turn (setImmediate), so an entry the kernel made before a request
 * is always seen and a burst of requests costs one read. The read is synchronous: a
 * procfs file is generated in memory, a few microseconds per entry, while the
 * asynchronous readFile it replaces took four trips through libuv's thread pool, which in
 * a 100-PC boot storm is busy with the file work of every boot (49 ms at the median per
 * script request, instrumented).
 */
export class NeighbourTable {
  #next: Promise<Map<string, string[]>> | undefined;

  constructor(private readonly read: () => string = readArpTable) {}

  readonly macForIp: MacForIp = async (ip) => {
    const macs = (await this.#freshTable()).get(ip) ?? [];
    return macs.length === 1 ? macs[0] : undefined;
  };

  #freshTable(): Promise<Map<string, string[]>> {
    this.#next ??= new Promise((resolve) => {
      setImmediate(() => {
        this.#next = undefined;
        let text = "";
        try {
          text = this.read();
        } catch {
          // Unreadable: no entry for anyone, so no link-verified peer.
        }
        resolve(arpTableByAddress(text));
      });
    });
    return this.#next;
  }
}

function readArpTable(): string {
  return readFileSync("/proc/net/arp", "utf8");
}
