// FileStore's shared copies: a request for an unchanged file is served from memory (the lstat
// fast path), and any change to the file, its contents or its inode's metadata, is a new version.

import { randomBytes } from "node:crypto";
import { chmod, lstat, rename, symlink, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import t from "tap";
import { FileStore } from "../../../src/netboot/tftp/filestore.js";
import { ERR_ACCESS_VIOLATION } from "../../../src/netboot/tftp/packet.js";
import { makeTempDir } from "./fixtures/helpers.js";

function store(): FileStore {
  return new FileStore({ maxCachedFileBytes: 1 << 20, cacheMaxBytes: 1 << 20, share: true });
}

async function bytesOf(s: FileStore, path: string): Promise<Buffer> {
  const r = await s.open(path, "octet");
  if (!r.ok) throw new Error(r.reason);
  const b = Buffer.from(await r.source.read(0, r.source.size));
  r.source.release();
  return b;
}

t.test("an unchanged file is read once; a chmod, a rewrite or a new inode reload it", async (t) => {
  const dir = await makeTempDir(t, "versions");
  const path = join(dir, "f");
  const v1 = randomBytes(5000);
  await writeFile(path, v1);
  const s = store();
  t.ok((await bytesOf(s, path)).equals(v1));
  t.ok((await bytesOf(s, path)).equals(v1));
  t.equal(s.stats().fileLoads, 1, "the second request came from memory");

  // chmod changes ctime only: still a new version, opened again with its new permissions.
  const mtime = new Date(Date.now() - 60_000);
  await utimes(path, mtime, mtime);
  await bytesOf(s, path);
  const loads = s.stats().fileLoads;
  await chmod(path, 0o600);
  await bytesOf(s, path);
  t.equal(s.stats().fileLoads, loads + 1, "a chmod is a new version");

  const v2 = randomBytes(5000);
  await writeFile(join(dir, "g"), v2);
  await rename(join(dir, "g"), path);
  t.ok((await bytesOf(s, path)).equals(v2), "a file renamed over it is served as it is now");
});

t.test("a symlink put where the file was is not followed from the cache", async (t) => {
  const dir = await makeTempDir(t, "swap");
  const path = join(dir, "f");
  await writeFile(path, "real");
  await writeFile(join(dir, "other"), "other");
  const s = store();
  await bytesOf(s, path);
  await rename(path, join(dir, "old"));
  await symlink(join(dir, "other"), path);
  const r = await s.open(path, "octet");
  t.equal(r.ok, false);
  if (!r.ok) t.equal(r.errorCode, ERR_ACCESS_VIOLATION, "refused as the open path refuses it");
});

t.test("an lstat the caller has just taken is the one the cache check uses", async (t) => {
  const dir = await makeTempDir(t, "seen");
  const path = join(dir, "f");
  const v1 = randomBytes(3000);
  await writeFile(path, v1);
  const s = store();
  await bytesOf(s, path);
  const seenV1 = await lstat(path);
  // The file changes between the caller's lstat and open: the store answers for the version
  // the caller saw (the same race as between its own lstat and serving), not with a second lstat.
  const v2 = randomBytes(3000);
  await writeFile(join(dir, "g"), v2);
  await rename(join(dir, "g"), path);
  const r = await s.open(path, "octet", seenV1);
  t.ok(r.ok);
  if (r.ok) {
    t.ok(Buffer.from(await r.source.read(0, r.source.size)).equals(v1), "served from memory");
    r.source.release();
  }
  t.equal(s.stats().fileLoads, 1, "no second read from disk");
  t.ok((await bytesOf(s, path)).equals(v2), "without it, the store looks for itself");
});
