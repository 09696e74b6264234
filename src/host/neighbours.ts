import { closeSync, openSync, read } from "node:fs";

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

/**
 * The complete entries' MACs of one address in /proc/net/arp's text, lowercased. Finds the
 * address's lines with indexOf instead of splitting the table: in a 500-PC storm a split
 * of the whole table per lookup was 4 % of the daemon's time.
 */
export function macsInArpTable(text: string, ip: string): string[] {
  const macs: string[] = [];
  // The table has IPv4 addresses only; anything else (a space, a pattern) has no entry.
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(ip)) return macs;
  const key = `\n${ip} `;
  for (let at = text.indexOf(key); at >= 0; at = text.indexOf(key, at + 1)) {
    const end = text.indexOf("\n", at + 1);
    const [, , flags, mac] = text
      .slice(at + 1, end < 0 ? undefined : end)
      .trim()
      .split(/\s+/);
    // Flags 0x0 is an incomplete entry (no answer yet).
    if (!mac || flags === "0x0" || mac === "00:00:00:00:00:00") continue;
    const lower = mac.toLowerCase();
    if (!macs.includes(lower)) macs.push(lower);
  }
  return macs;
}

/**
 * A reader of the ARP table that never reads on the event loop and never has more than
 * one read in flight plus one queued: a lookup joins the next read that starts after it
 * asked (an entry the kernel made just before the request is then always seen), so a
 * flood of requests costs a read per read-time, not a read per request. The reads are
 * preads of a descriptor kept open (procfs text is made again from offset 0): no open,
 * fstat and close through libuv's thread pool around them as readFile makes.
 */
export class NeighbourTable {
  private inFlight: Promise<string> | undefined;
  private queued: Promise<string> | undefined;

  constructor(private readonly read: () => Promise<string> = arpTableReader()) {}

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

/**
 * /proc/net/arp read through one descriptor, opened on first use, again after an error.
 * procfs hands out about a page per read (600 entries: 13 reads), so it reads until a
 * read returns nothing.
 */
export function arpTableReader(path = "/proc/net/arp"): () => Promise<string> {
  let fd: number | undefined;
  let buf = Buffer.alloc(64 * 1024);
  const pread = (at: number) =>
    new Promise<number>((resolve, reject) =>
      read(fd!, buf, at, buf.length - at, at, (err, n) => (err ? reject(err) : resolve(n))),
    );
  return async () => {
    try {
      fd ??= openSync(path, "r");
      let size = 0;
      for (;;) {
        if (size === buf.length) {
          const bigger = Buffer.alloc(buf.length * 2);
          buf.copy(bigger);
          buf = bigger;
        }
        const n = await pread(size);
        if (n === 0) break;
        size += n;
      }
      return buf.toString("latin1", 0, size);
    } catch (err) {
      if (fd !== undefined) closeSync(fd);
      fd = undefined;
      throw err;
    }
  };
}
