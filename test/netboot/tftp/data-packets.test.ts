// The ready-packet layout of a shared file (data-packets.ts) and the store's rules for it
// (filestore.ts: which transfers get one, how many sizes a file keeps, what memory counts).

import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import t from "tap";
import { DataPackets } from "../../../src/netboot/tftp/data-packets.js";
import { FileStore } from "../../../src/netboot/tftp/filestore.js";
import { makeTempDir } from "./fixtures/helpers.js";

t.test("every packet is the DATA header and that block's bytes, the last one short", async (t) => {
  const file = randomBytes(3 * 1468 + 100);
  const p = DataPackets.build(file, 1468);
  t.equal(p.blocks, 4);
  t.equal(p.byteLength, file.length + 4 * 4);
  for (let n = 1; n <= 4; n++) {
    const packet = p.packet(n);
    t.same([packet.readUInt16BE(0), packet.readUInt16BE(2)], [3, n], `header of block ${n}`);
    t.ok(
      packet.subarray(4).equals(file.subarray((n - 1) * 1468, n * 1468)),
      `payload of block ${n}`,
    );
  }
  t.equal(p.packet(4).length, 4 + 100);
});

t.test("a file that is a multiple of blksize ends with an empty packet", async (t) => {
  const p = DataPackets.build(randomBytes(1024), 512);
  t.equal(p.blocks, 3);
  t.same([...p.packet(3)], [0, 3, 0, 3], "DATA 3 with no payload");
  const empty = DataPackets.build(Buffer.alloc(0), 512);
  t.equal(empty.blocks, 1);
  t.same([...empty.packet(1)], [0, 3, 0, 1]);
});

t.test("block numbers in the headers wrap at 65536", async (t) => {
  const file = randomBytes(512 * 65537 + 7);
  const p = DataPackets.build(file, 512);
  t.equal(p.blocks, 65538);
  t.equal(p.packet(65535).readUInt16BE(2), 65535);
  t.equal(p.packet(65536).readUInt16BE(2), 0);
  t.equal(p.packet(65537).readUInt16BE(2), 1);
  t.ok(
    p
      .packet(65537)
      .subarray(4)
      .equals(file.subarray(512 * 65536, 512 * 65537)),
  );
  t.equal(p.packet(65538).length, 4 + 7);
});

t.test("the store lays out shared small files, a few sizes each, and counts them", async (t) => {
  const dir = await makeTempDir(t, "layouts");
  const path = join(dir, "f");
  const content = randomBytes(10_000);
  await writeFile(path, content);
  const store = new FileStore({ maxCachedFileBytes: 1 << 20, cacheMaxBytes: 1 << 20, share: true });
  const opened = await store.open(path, "octet");
  if (!opened.ok) throw new Error(opened.reason);
  const src = opened.source;
  const a = src.packets?.(1468);
  t.ok(a, "a layout for 1468");
  t.equal(src.packets?.(1468), a, "built once, then shared");
  t.equal(src.packets?.(256), undefined, "none below 512 bytes a block (headers would cost >1%)");
  t.ok(src.packets?.(512));
  t.ok(src.packets?.(1024));
  t.equal(src.packets?.(1432), undefined, "at most 3 sizes per file: the fourth reads instead");
  t.equal(
    store.stats().cachedBytes,
    content.length + a!.byteLength + (10_000 + 4 * 20) + (10_000 + 4 * 10),
  );
  const netascii = await store.open(path, "netascii");
  if (!netascii.ok) throw new Error(netascii.reason);
  t.equal(netascii.source.packets?.(1468), undefined, "the sizes are used up for this file");
  src.release();
  netascii.source.release();

  const unshared = new FileStore({
    maxCachedFileBytes: 1 << 20,
    cacheMaxBytes: 1 << 20,
    share: false,
  });
  const u = await unshared.open(path, "octet");
  if (!u.ok) throw new Error(u.reason);
  t.equal(u.source.packets, undefined, "unshared files are sent from read()");
  u.source.release();
});
