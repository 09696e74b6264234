// A small file laid out once as ready DATA packets for one blksize, header before each block:
// [0 3 | 0 1 | block 1][0 3 | 0 2 | block 2]... Sending block n is then one view into memory that
// every transfer of the file shares: no header allocated, no list of buffers for dgram to check
// and copy into an array, per packet. The headers carry block numbers wrapped at 65536, so the
// layout holds for any number of blocks.

import { OP_DATA } from "./packet.js";

/** Below this blksize the headers would add more than 1% to the file's memory: not laid out. */
export const MIN_PACKED_BLKSIZE = 512;

export class DataPackets {
  readonly #wire: Buffer;
  readonly #blksize: number;
  readonly #size: number;
  /** Blocks in the transfer; the last one is shorter than blksize, possibly empty. */
  readonly blocks: number;

  private constructor(wire: Buffer, blksize: number, size: number, blocks: number) {
    this.#wire = wire;
    this.#blksize = blksize;
    this.#size = size;
    this.blocks = blocks;
  }

  /** Copies `bytes` once into packets of `blksize` (8..65464). */
  static build(bytes: Buffer, blksize: number): DataPackets {
    const size = bytes.length;
    const blocks = Math.floor(size / blksize) + 1;
    const wire = Buffer.allocUnsafe(size + 4 * blocks);
    let at = 0;
    for (let n = 1; n <= blocks; n++) {
      wire.writeUInt16BE(OP_DATA, at);
      wire.writeUInt16BE(n & 0xffff, at + 2);
      const from = (n - 1) * blksize;
      at += 4 + bytes.copy(wire, at + 4, from, Math.min(from + blksize, size));
    }
    return new DataPackets(wire, blksize, size, blocks);
  }

  /** Bytes held (the file plus 4 per block). */
  get byteLength(): number {
    return this.#wire.length;
  }

  /** The whole DATA packet of block `n` (absolute, 1-based, not wrapped). */
  packet(n: number): Buffer {
    const start = (n - 1) * (this.#blksize + 4);
    const data = Math.min(this.#blksize, this.#size - (n - 1) * this.#blksize);
    return this.#wire.subarray(start, start + 4 + data);
  }
}
