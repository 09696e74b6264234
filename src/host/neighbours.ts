import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";

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
  return macInArpTable(ip, text);
}

/**
 * macForIp without blocking the event loop: for paths that run per request or per
 * transfer (the TFTP report), where a synchronous read of /proc would stall every
 * other client while the kernel formats its table.
 */
export async function macForIpAsync(ip: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile("/proc/net/arp", "utf8");
  } catch {
    return undefined;
  }
  return macInArpTable(ip, text);
}

function macInArpTable(ip: string, text: string): string | undefined {
  for (const line of text.split("\n").slice(1)) {
    const [address, , flags, mac] = line.trim().split(/\s+/);
    // Flags 0x0 is an incomplete entry (no answer yet).
    if (address === ip && mac && flags !== "0x0" && mac !== "00:00:00:00:00:00") {
      return mac.toLowerCase();
    }
  }
  return undefined;
}
