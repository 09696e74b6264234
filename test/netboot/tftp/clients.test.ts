// Real TFTP clients against the server on loopback: curl (sends tsize and blksize, optionally
// none) and tftp-hpa's tftp (plain RFC 1350 lock-step, no options). Files are compared byte for
// byte with the originals, including the Debian ipxe package's binaries served through aliases.

import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import t from "tap";
import { makeTempDir, startServer } from "./fixtures/helpers.js";

const IPXE = {
  "undionly.kpxe": "/usr/lib/ipxe/undionly.kpxe",
  "snponly.efi": "/usr/lib/ipxe/snponly.efi",
  "ipxe.efi": "/usr/lib/ipxe/ipxe.efi",
};

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], cwd?: string): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, timeout: 60_000, encoding: "utf8" }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === "number" ? err.code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

const haveTools = existsSync("/usr/bin/tftp") && existsSync("/usr/bin/curl");
const haveIpxe = Object.values(IPXE).every((p) => existsSync(p));
const skip = !haveTools
  ? "needs curl and tftp-hpa (apt-get install curl tftp-hpa)"
  : !haveIpxe
    ? "needs Debian's ipxe package"
    : false;

t.test("real clients", { skip }, async (t) => {
  const f = await startServer(t, { aliases: IPXE, maxBlksize: 1468 });
  const out = await makeTempDir(t, "out");
  const url = (name: string) => `tftp://127.0.0.1:${f.port}/${name}`;

  t.test("curl fetches each iPXE binary through its alias, byte-exact", async (t) => {
    for (const [name, path] of Object.entries(IPXE)) {
      const dest = join(out, `curl-${name}`);
      const r = await run("curl", ["-sS", "--tftp-blksize", "1468", "-o", dest, url(name)]);
      t.equal(r.code, 0, `curl exit code for ${name}: ${r.stderr}`);
      t.ok((await readFile(dest)).equals(await readFile(path)), `${name} byte-exact`);
    }
    const events = f.events.filter((e) => e.ok);
    t.same(
      events.map((e) => [e.file, e.bytes]),
      await Promise.all(
        Object.entries(IPXE).map(async ([n, p]) => [n, (await readFile(p)).length]),
      ),
      "one finished event per file with its size",
    );
  });

  t.test("curl with a blksize above the cap gets the cap and the file", async (t) => {
    const dest = join(out, "curl-big-blk");
    const r = await run("curl", ["-sS", "--tftp-blksize", "65464", "-o", dest, url("snponly.efi")]);
    t.equal(r.code, 0, r.stderr);
    t.ok((await readFile(dest)).equals(await readFile(IPXE["snponly.efi"])));
  });

  t.test("curl without options (plain RFC 1350)", async (t) => {
    const dest = join(out, "curl-noopt");
    const r = await run("curl", ["-sS", "--tftp-no-options", "-o", dest, url("undionly.kpxe")]);
    t.equal(r.code, 0, r.stderr);
    t.ok((await readFile(dest)).equals(await readFile(IPXE["undionly.kpxe"])));
  });

  t.test(
    "tftp-hpa fetches in binary mode, byte-exact, with and without a leading slash",
    async (t) => {
      const content = randomBytes(300_000);
      await writeFile(join(f.root, "random.bin"), content);
      for (const name of ["random.bin", "/random.bin"]) {
        const r = await run(
          "tftp",
          ["-m", "binary", "127.0.0.1", String(f.port), "-c", "get", name, "hpa.bin"],
          out,
        );
        t.equal(r.code, 0, r.stderr);
        t.notMatch(r.stdout + r.stderr, /error|timed out/i);
        t.ok((await readFile(join(out, "hpa.bin"))).equals(content), `${name} byte-exact`);
      }
      const r = await run(
        "tftp",
        ["-m", "binary", "127.0.0.1", String(f.port), "-c", "get", "ipxe.efi", "hpa-ipxe.efi"],
        out,
      );
      t.equal(r.code, 0, r.stderr);
      t.ok(
        (await readFile(join(out, "hpa-ipxe.efi"))).equals(await readFile(IPXE["ipxe.efi"])),
        "ipxe.efi through tftp-hpa",
      );
    },
  );

  t.test("tftp-hpa in ascii mode turns our netascii back into the original text", async (t) => {
    const text = "#!ipxe\nchain http://10.0.0.1/boot\r\nbare CR\rend\n";
    await writeFile(join(f.root, "script.txt"), text);
    const r = await run(
      "tftp",
      ["-m", "ascii", "127.0.0.1", String(f.port), "-c", "get", "script.txt", "hpa.txt"],
      out,
    );
    t.equal(r.code, 0, r.stderr);
    t.equal(await readFile(join(out, "hpa.txt"), "latin1"), text);
  });

  t.test("curl's rollover agrees with ours: 65536+ blocks with blksize 8", async (t) => {
    const content = randomBytes(8 * 65536 + 77);
    await writeFile(join(f.root, "rollover.bin"), content);
    const dest = join(out, "rollover.bin");
    const r = await run("curl", ["-sS", "--tftp-blksize", "8", "-o", dest, url("rollover.bin")]);
    t.equal(r.code, 0, r.stderr);
    t.ok((await readFile(dest)).equals(content), "byte-exact after the block number wrapped");
  });

  t.test("refusals reach real clients with the right TFTP error code", async (t) => {
    const base = await makeTempDir(t, "outside");
    await writeFile(join(base, "secret"), "s");
    await symlink(join(base, "secret"), join(f.root, "leak"));
    // curl maps TFTP error 1 to exit code 68 and error 2 to exit code 69.
    const missing = await run("curl", ["-sS", "-o", join(out, "x"), url("missing.bin")]);
    t.equal(missing.code, 68, "file not found");
    const leak = await run("curl", ["-sS", "-o", join(out, "x"), url("leak")]);
    t.equal(leak.code, 69, "symlink out of the root: access violation");
    const dotdot = await run(
      "tftp",
      ["-m", "binary", "127.0.0.1", String(f.port), "-c", "get", "../../etc/passwd", "x"],
      out,
    );
    t.match(dotdot.stdout + dotdot.stderr, /Error code 2/, "tftp-hpa shows error 2");
    const put = await run(
      "tftp",
      ["-m", "binary", "127.0.0.1", String(f.port), "-c", "put", "x", "up.bin"],
      out,
    );
    t.match(put.stdout + put.stderr, /Error code 2/, "upload refused with error 2");
  });
});
