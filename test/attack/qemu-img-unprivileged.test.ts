// qemu-img parses files uploaded by clients: when the daemon is root it runs as nobody with
// no capabilities and under prlimit, yet still reads the upload and writes the raw copy in
// a folder only root may enter.
import { execFileSync } from "node:child_process";
import { chmod, mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import t from "tap";
import { checkImage, convertToRaw, probeImage } from "../../src/images/qemu-img.js";
import { tempDir } from "../helpers/daemon.js";

const skip = process.getuid?.() === 0 ? false : "needs root: the switch to nobody is made by root";

t.test("qemu-img runs as nobody, without capabilities, under limits", { skip }, async (t) => {
  const top = tempDir(t, "bf-qimg-");
  const tools = join(top, "tools");
  await mkdir(tools);
  await chmod(top, 0o755);
  await chmod(tools, 0o755);
  // Stands in for qemu-img: reports who it runs as, then fails so the report comes back
  // in the rejection's message.
  const spy = join(tools, "qemu-img-spy");
  await writeFile(
    spy,
    `#!/bin/sh
st=/proc/self/status
echo "uid=$(id -u) groups=$(id -G) capeff=$(awk '/^CapEff/{print $2}' $st) capbnd=$(awk '/^CapBnd/{print $2}' $st) nnp=$(awk '/^NoNewPrivs/{print $2}' $st) as=$(ulimit -v) cpu=$(ulimit -t) head=$(head -c 6 "$3") shadow=$(head -c 1 /etc/shadow >/dev/null 2>&1 && echo read || echo denied)" >&2
exit 1
`,
    { mode: 0o755 },
  );
  const images = join(top, "images");
  await mkdir(images, { mode: 0o750 });
  const upload = join(images, "upload.bin");
  await writeFile(upload, "QFI-ish header", { mode: 0o600 });

  const err = await probeImage(upload, { binary: spy, memoryLimitBytes: 512 * 2 ** 20 }).catch(
    (e: Error) => e,
  );
  const said = err instanceof Error ? err.message : "";
  t.match(said, /uid=65534 groups=65534 /, "runs as nobody:nogroup, no other group");
  t.match(said, /capeff=0000000000000000 capbnd=0000000000000000 /, "no capabilities at all");
  t.match(said, /nnp=1 /, "cannot regain any (no_new_privs)");
  t.match(said, /as=524288 cpu=30 /, "address space and CPU time limited");
  t.match(said, /head=QFI-is /, "yet reads the upload in a folder it cannot enter");
  t.match(said, /shadow=denied/, "and cannot read /etc/shadow");
  const st = await stat(upload);
  t.same([st.uid, st.gid, st.mode & 0o777], [0, 0, 0o600], "the upload is root's again after");

  t.test("real qemu-img converts a qcow2 it may not reach by path", async (t) => {
    const raw = join(top, "disk.raw");
    const data = Buffer.alloc(3 * 2 ** 20);
    for (let i = 0; i < 3; i++) data.fill(0x41 + i, i * 2 ** 20, i * 2 ** 20 + 4096);
    await writeFile(raw, data);
    const qcow = join(images, "disk.qcow2");
    execFileSync("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, qcow]);
    await chmod(qcow, 0o640);
    const info = await probeImage(qcow);
    t.same([info.format, info.virtualSize], ["qcow2", data.length], "info");
    await checkImage(qcow, "qcow2");
    const out = join(images, "disk.raw.part");
    await convertToRaw(qcow, "qcow2", out);
    t.ok((await readFile(out)).equals(data), "the raw copy is byte-exact");
    for (const f of [qcow, out]) {
      const s = await stat(f);
      t.same([s.uid, s.gid], [0, 0], `${f.slice(images.length + 1)} is root's after`);
    }
  });
});
