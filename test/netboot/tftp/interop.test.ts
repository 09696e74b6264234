// bootfleet's TFTP server against clients written by others, each with the options it
// offers: tftp-hpa's tftp (RFC 1350, no options), curl (blksize, tsize) and the npm `tftp`
// package, node-tftp (blksize, windowsize, tsize read from the OACK). Every file is
// compared by SHA-256: one that is not a multiple of the block size, an empty one, and one
// of more than 65535 blocks, so the block number wraps (made cheap with an 8-byte block).
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import t from "tap";
// @ts-expect-error node-tftp ships no type declarations; the part used is typed below.
import tftpModule from "tftp";
import { makeTempDir, startServer } from "./fixtures/helpers.js";

interface Run {
  code: number;
  stderr: string;
}

function run(cmd: string, args: string[], cwd?: string): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, timeout: 120_000, encoding: "utf8" }, (err, _out, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === "number" ? err.code : -1, stderr });
    });
  });
}

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

interface NodeTftpGet {
  data: Buffer;
  /** What the client reports having negotiated. */
  stats: { blockSize: number; windowSize: number; size: number | null };
}

interface NodeTftpClient {
  createGetStream(remote: string): NodeJS.EventEmitter;
}
const tftp = tftpModule as {
  createClient(o: {
    host: string;
    port: number;
    retries: number;
    blockSize: number;
    windowSize: number;
  }): NodeTftpClient;
};

/** A download with node-tftp's streaming client, buffered. */
function nodeTftpGet(
  port: number,
  name: string,
  opts: { blockSize: number; windowSize: number },
): Promise<NodeTftpGet> {
  const client = tftp.createClient({ host: "127.0.0.1", port, retries: 3, ...opts });
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let stats: NodeTftpGet["stats"] | undefined;
    const get = client.createGetStream(name);
    get.on("stats", (s: NodeTftpGet["stats"]) => {
      stats = s;
    });
    get.on("data", (c: Buffer) => chunks.push(c));
    get.on("error", reject);
    get.on("end", () => {
      if (!stats) reject(new Error("no stats event"));
      else resolve({ data: Buffer.concat(chunks), stats });
    });
  });
}

const haveHpa = existsSync("/usr/bin/tftp");
const haveCurl = existsSync("/usr/bin/curl");

t.test("clients written by others fetch byte-exact files", async (t) => {
  const root = await makeTempDir(t, "interop-root");
  // 1468 is the server's default cap: 3 blocks and 100 bytes, and 512-byte blocks do not
  // divide it either.
  const files: Record<string, Buffer> = {
    "odd.bin": randomBytes(1468 * 3 + 100),
    "empty.bin": Buffer.alloc(0),
    // 70,000 blocks of 8 bytes plus 3: the block number passes 65535 and wraps to 0.
    "wrap.bin": randomBytes(8 * 70_000 + 3),
  };
  for (const [name, data] of Object.entries(files)) await writeFile(join(root, name), data);
  const f = await startServer(t, { root, maxBlksize: 1468 });
  const out = await makeTempDir(t, "interop-out");
  const expect = (
    t: { equal(a: unknown, b: unknown, m: string): void },
    got: Buffer,
    name: string,
    who: string,
  ) => t.equal(sha256(got), sha256(files[name]!), `${who}: ${name} (${files[name]!.length} bytes)`);

  t.test("tftp-hpa, binary mode, no options", { skip: !haveHpa && "needs tftp-hpa" }, async (t) => {
    for (const name of ["odd.bin", "empty.bin"]) {
      const r = await run(
        "tftp",
        ["-m", "binary", "127.0.0.1", String(f.port), "-c", "get", name, `hpa-${name}`],
        out,
      );
      t.equal(r.code, 0, `tftp exit 0 ${r.stderr}`);
      expect(t, await readFile(join(out, `hpa-${name}`)), name, "tftp-hpa");
    }
  });

  t.test("curl with blksize and tsize", { skip: !haveCurl && "needs curl" }, async (t) => {
    for (const [name, blksize] of [
      ["odd.bin", "1468"],
      ["odd.bin", "512"],
      ["empty.bin", "1024"],
      ["wrap.bin", "8"],
    ] as const) {
      const dest = join(out, `curl-${blksize}-${name}`);
      // curl asks for tsize on its own and reads the OACK's size.
      const r = await run("curl", [
        "-sS",
        "--tftp-blksize",
        blksize,
        "-o",
        dest,
        `tftp://127.0.0.1:${f.port}/${name}`,
      ]);
      t.equal(r.code, 0, `curl exit 0 ${r.stderr}`);
      expect(t, await readFile(dest), name, `curl blksize ${blksize}`);
    }
  });

  t.test("node-tftp with blksize and windowsize, tsize from the OACK", async (t) => {
    for (const [name, blockSize, windowSize] of [
      ["odd.bin", 1468, 1],
      ["odd.bin", 512, 4],
      ["empty.bin", 1468, 4],
      ["wrap.bin", 8, 16],
    ] as const) {
      const got = await nodeTftpGet(f.port, name, { blockSize, windowSize });
      expect(t, got.data, name, `node-tftp blksize ${blockSize} windowsize ${windowSize}`);
      t.same(
        [got.stats.blockSize, got.stats.windowSize, got.stats.size],
        // An empty file gets no tsize (see the curl case): the size is then unknown.
        [blockSize, windowSize, files[name]!.length || null],
        "the options it asked for were granted, and tsize told the size",
      );
    }
  });
});
