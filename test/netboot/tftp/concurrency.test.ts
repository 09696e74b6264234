// Many clients at once: 50 concurrent transfers of the same 1 MB file, all byte-exact, from one
// read of the disk (and 50 reads when sharing is switched off, which shows what the cache saves);
// then 50 concurrent curl processes against the iPXE binary.

// Every client here is 127.0.0.1: the per-address cap (4) is lifted; test/attack tests it.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import t from "tap";
import { fetchFile, makeTempDir, startServer, waitFor } from "./fixtures/helpers.js";

async function fiftyAtOnce(t: Tap, shareFiles: boolean) {
  const f = await startServer(t, { shareFiles, maxTransfers: 64, maxTransfersPerAddress: 64 });
  const content = randomBytes(1024 * 1024);
  await writeFile(join(f.root, "snponly.efi"), content);
  let peak = 0;
  const sampler = setInterval(() => {
    peak = Math.max(peak, f.server.stats().activeTransfers);
  }, 5);
  t.teardown(() => clearInterval(sampler));
  const results = await Promise.all(
    Array.from({ length: 50 }, (_, i) =>
      fetchFile(f.port, "snponly.efi", {
        options: [
          ["blksize", "1468"],
          ["tsize", "0"],
          // Half lock-step like iPXE, half windowed like EDK2.
          ...(i % 2 === 0 ? [] : ([["windowsize", "4"]] as Array<[string, string]>)),
        ],
        deadlineMs: 60_000,
      }),
    ),
  );
  clearInterval(sampler);
  t.equal(results.filter((r) => r.data.equals(content)).length, 50, "all 50 byte-exact");
  t.ok(peak >= 25, `transfers overlapped (peak ${peak} at once)`);
  const finished = () => f.events.filter((e) => e.ok && e.bytes === content.length);
  await waitFor(() => finished().length >= 50);
  const events = finished();
  t.equal(events.length, 50, "50 finished events");
  t.equal(new Set(events.map((e) => e.clientPort)).size, 50, "each from its own client port");
  return f.server.stats();
}

// The type of a subtest's `t` (the last overload of t.test takes only the callback).
type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

t.test("50 concurrent transfers share one read of the file", async (t) => {
  const stats = await fiftyAtOnce(t, true);
  t.equal(stats.fileLoads, 1, "the file was read from disk once");
  t.equal(stats.cachedFiles, 1);
});

t.test("without sharing, the same load reads the file 50 times", async (t) => {
  const stats = await fiftyAtOnce(t, false);
  t.equal(stats.fileLoads, 50);
  t.equal(stats.cachedFiles, 0);
});

t.test("a file replaced on disk is served in its new version", async (t) => {
  const f = await startServer(t, { maxTransfersPerAddress: 64 });
  const path = join(f.root, "f.bin");
  await writeFile(path, "version one");
  t.equal((await fetchFile(f.port, "f.bin")).data.toString(), "version one");
  await writeFile(path, "version two, longer");
  t.equal((await fetchFile(f.port, "f.bin")).data.toString(), "version two, longer");
  t.equal(f.server.stats().cachedFiles, 1, "the idle old version was dropped");
});

const snponly = "/usr/lib/ipxe/snponly.efi";
t.test(
  "50 concurrent curl processes",
  {
    skip:
      existsSync("/usr/bin/curl") && existsSync(snponly)
        ? false
        : "needs curl and Debian's ipxe package",
  },
  async (t) => {
    const f = await startServer(t, {
      aliases: { "snponly.efi": snponly },
      maxTransfersPerAddress: 64,
    });
    const out = await makeTempDir(t, "curl50");
    const codes = await Promise.all(
      Array.from(
        { length: 50 },
        (_, i) =>
          new Promise<number>((resolve) => {
            execFile(
              "curl",
              [
                "-sS",
                "--tftp-blksize",
                "1468",
                "-o",
                join(out, `c${i}`),
                `tftp://127.0.0.1:${f.port}/snponly.efi`,
              ],
              { timeout: 60_000 },
              (err) => resolve(err === null ? 0 : typeof err.code === "number" ? err.code : -1),
            );
          }),
      ),
    );
    t.same(codes, Array(50).fill(0), "every curl succeeded");
    const want = await readFile(snponly);
    let exact = 0;
    for (let i = 0; i < 50; i++) if ((await readFile(join(out, `c${i}`))).equals(want)) exact++;
    t.equal(exact, 50, "all 50 byte-exact");
    t.equal(f.server.stats().fileLoads, 1);
  },
);
