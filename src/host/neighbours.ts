import { readFile } from "node:fs/promises";

/**
 * The MAC behind an IPv4 address, from the kernel's ARP table (/proc/net/arp, read
 * asynchronously). A TFTP or HTTP request carries only the client's address; the server has
 * just exchanged packets with it (for TCP, the handshake made the kernel resolve it), so
 * the kernel knows the MAC that answers for that address on the link. This is the one fact
 * about a client the server learns from its own network stack rather than from what a
 * packet claims. A routed client has no entry (its packets come from the router's MAC):
 * undefined then, and undefined too when two interfaces disagree about the address.
 */
export type MacForIp = (ip: string) => Promise<string | undefined>;

/** Parses /proc/net/arp: the complete entries' MACs of one address. */
export function macsInArpTable(text: string, ip: string): string[] {
  const macs = new Set<string>();
  for (const line of text.split("\n").slice(1)) {
    const [address, , flags, mac] = line.trim().split(/\s+/);
    // Flags 0x0 is an incomplete entry (no answer yet).
    if (address === ip && mac && flags !== "0x0" && mac !== "00:00:00:00:00:00") {
      macs.add(mac.toLowerCase());
    }
  }
  return [...macs];
}

/**
 * A reader of the ARP table that never reads synchronously and never has more than one
 * read in flight plus one queued: a request joins the next read that starts after it
 * asked (an entry the kernel made just before the request is then always seen), so a
 * flood of requests costs a read per read-time, not a read per request.
 */
export class NeighbourTable {
  private inFlight: Promise<string> | undefined;
  private queued: Promise<string> | undefined;

  constructor(private readonly read: () => Promise<string> = readArpTable) {}

  readonly macForIp: MacForIp = async (ip) => {
    const macs = macsInArpTable(await this.freshTable(), ip);
    return macs.length === 1 ? macs[0] : undefined;
  };

  private freshTable(): Promise<string> {
    if (!this.inFlight) return this.start();
    // The read in flight may have begun before the caller's entry existed: wait for the next.
    this.queued ??= this.inFlight.then(
      () => this.start(),
      () => this.start(),
    );
    return this.queued;
  }

  private start(): Promise<string> {
    this.queued = undefined;
    const p = this.read()
      .catch(() => "")
      .finally(() => {
        if (this.inFlight === p) this.inFlight = undefined;
      });
    this.inFlight = p;
    return p;
  }
}

function readArpTable(): Promise<string> {
  return readFile("/proc/net/arp", "utf8");
}
