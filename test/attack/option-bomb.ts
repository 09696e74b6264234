// DHCP datagrams made to cost a decoder work: shared by the attack test and the timing script.
import { MAGIC_COOKIE } from "../../src/netboot/dhcp/packet.js";

/**
 * A BOOTREQUEST whose options field holds `items` repeats of one option of one byte each
 * (RFC 3396 says repeats are concatenated), then end. A 63 KB datagram holds ~21,000 of them.
 */
export function optionBomb(items: number, code = 77): Buffer {
  const b = Buffer.alloc(240 + items * 3 + 1);
  b[0] = 1; // BOOTREQUEST
  b[1] = 1;
  b[2] = 6;
  b.writeUInt32BE(0x1234_5678, 4);
  Buffer.from([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]).copy(b, 28);
  b.writeUInt32BE(MAGIC_COOKIE, 236);
  let i = 240;
  for (let k = 0; k < items; k++) {
    b[i++] = code;
    b[i++] = 1;
    b[i++] = 0x41;
  }
  b[i] = 255;
  return b;
}
