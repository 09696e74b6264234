import { readFileSync } from "node:fs";

/**
 * The MAC behind an IPv4 address, from the kernel's ARP table. A TFTP or HTTP request
 * carries only the client's address; the server has just exchanged packets with it, so
 * the kernel knows its MAC, and this ties the request to the machine's boot timeline.
 */
export function macForIp(ip: string, arpTable?: string): string | undefined {
  let text: string;
  try {
    text = arpTable ?? readFileSync("/proc/net/arp", "utf8");
  } catch {
    return undefined;
  }
  for (const line of text.split("\n").slice(1)) {
    const [address, , flags, mac] = line.trim().split(/\s+/);
    // Flags 0x0 is an incomplete entry (no answer yet).
    if (address === ip && mac && flags !== "0x0" && mac !== "00:00:00:00:00:00") {
      return mac.toLowerCase();
    }
  }
  return undefined;
}
