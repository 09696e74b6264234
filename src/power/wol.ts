import { createSocket } from "node:dgram";

/** Parses "aa:bb:cc:dd:ee:ff" or "aa-bb-..." into 6 bytes; anything else is refused. */
export function parseMac(mac: string): Buffer {
  const m =
    /^([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})$/i.exec(
      mac.trim(),
    );
  if (!m) throw new Error(`invalid MAC address ${JSON.stringify(mac)}`);
  return Buffer.from(m.slice(1).map((h) => Number.parseInt(h, 16)));
}

/** The AMD "Magic Packet": six 0xFF bytes, then the target MAC sixteen times (102 bytes). */
export function magicPacket(mac: string): Buffer {
  const hw = parseMac(mac);
  const out = Buffer.alloc(6 + 16 * 6, 0xff);
  for (let i = 0; i < 16; i++) hw.copy(out, 6 + i * 6);
  return out;
}

export interface WakeOptions {
  mac: string;
  /**
   * The server's address on the machine's LAN: the socket binds to it, so Linux sends the
   * limited broadcast out of that interface (see LIBRARIES.md, "UDP and interfaces").
   */
  sourceAddress: string;
  /** 255.255.255.255 by default; a directed broadcast (10.0.0.255) also works. */
  broadcast?: string;
  port?: number;
  /** Sent this many times, a little apart: one UDP datagram may be lost. */
  repeat?: number;
  intervalMs?: number;
}

/** Sends the magic packet; resolves once every copy has been handed to the kernel. */
export async function wakeOnLan(opts: WakeOptions): Promise<void> {
  const packet = magicPacket(opts.mac);
  const sock = createSocket({ type: "udp4", reuseAddr: true });
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once("error", reject);
      sock.bind({ address: opts.sourceAddress, port: 0 }, () => {
        sock.off("error", reject);
        resolve();
      });
    });
    sock.setBroadcast(true);
    const repeat = Math.max(1, opts.repeat ?? 3);
    for (let i = 0; i < repeat; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, opts.intervalMs ?? 100));
      await new Promise<void>((resolve, reject) =>
        sock.send(packet, opts.port ?? 9, opts.broadcast ?? "255.255.255.255", (err) =>
          err ? reject(err) : resolve(),
        ),
      );
    }
  } finally {
    sock.close();
  }
}
