import { writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { join } from "node:path";
import t from "tap";
import { hasOpenWriter } from "../../src/host/open-writers.js";
import { tempDir } from "../helpers/daemon.js";

// The check that keeps a half-copied image out of the drop folder: this process is the
// writer, seen through the real /proc.

t.test("a file open for writing has a writer; read-only or closed has none", async (t) => {
  const dir = tempDir(t, `bf-writers-${process.pid}-`);
  const file = join(dir, "disk.raw");
  writeFileSync(file, "x");
  t.equal(await hasOpenWriter(file), false, "closed");
  const reader = await open(file, "r");
  t.equal(await hasOpenWriter(file), false, "open read-only");
  const writer = await open(file, "a");
  t.equal(await hasOpenWriter(file), true, "open for appending");
  await writer.close();
  t.equal(await hasOpenWriter(file), false, "the writer closed it");
  const both = await open(file, "r+");
  t.equal(await hasOpenWriter(file), true, "open read-write");
  await both.close();
  await reader.close();
  t.equal(await hasOpenWriter(join(dir, "other.raw")), false, "another path");
});
