// biome-ignore-all lint/suspicious/noTemplateCurlyInString: "${...}" in these strings is iPXE syntax
// Rendered scripts run on real iPXE (Debian's ipxe.lkrn in QEMU), with hostile values, and
// the serial console shows what iPXE printed and what it ran.

import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import t, { type Test } from "tap";
import { loadTemplates, renderScript } from "../../../src/netboot/script/render.js";
import {
  asSerialShows,
  cmdlineKernel,
  qemuSkipReason,
  runIpxe,
  writeMarkerDisk,
} from "./fixtures/qemu-ipxe.js";

const skip = qemuSkipReason();
const IPXE_DIR = join(import.meta.dirname, "../../../ipxe");
// Inside QEMU's restricted user network, this address:port reaches our loopback server.
const GUEST_HTTP = "http://10.0.2.100:8080";
const CANARY = "CANARY-5ec7e7";

async function httpServer(
  t: Test,
  handle: (path: string, res: ServerResponse) => void,
): Promise<{ port: number; hits: string[] }> {
  const hits: string[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = req.url ?? "";
    hits.push(path);
    handle(path, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  server.closeIdleConnections?.();
  return { port: (server.address() as AddressInfo).port, hits };
}

const count = (haystack: string, needle: string) => haystack.split(needle).length - 1;

t.test(
  "menu, discovery and kernel scripts with hostile values on real iPXE",
  { skip },
  async (t) => {
    const templates = await loadTemplates(IPXE_DIR);
    const title = `T ${"${password}"} || reboot`;
    const labelA = "A\nset bf-pwned yes";
    const labelB = "B && set bf-pwned yes # ; shell \u00fc";
    const message = "M\nset bf-pwned yes ${password} || reboot";
    const name = "-n ${password} \u00fc";
    const cmdline = 'console=ttyS0 a||b && set bf-pwned yes # ; "q" \u00fc';
    let discoveries = 0;

    const { port, hits } = await httpServer(t, (path, res) => {
      if (path === "/menu") {
        res.end(
          renderScript(templates, "menu", {
            title,
            items: [
              { label: labelA, url: `${GUEST_HTTP}/never` },
              { label: labelB, url: `${GUEST_HTTP}/discover` },
            ],
            defaultIndex: 1,
            timeoutMs: 1500,
          }),
        );
      } else if (path === "/discover") {
        discoveries++;
        // Twice "still unknown", then the admin has assigned a kernel boot.
        res.end(
          discoveries <= 2
            ? renderScript(templates, "discovery", {
                mac: "52:54:00:12:34:56",
                scriptUrl: `${GUEST_HTTP}/discover`,
                retrySeconds: 1,
                message,
              })
            : renderScript(templates, "kernel", {
                name,
                kernelUrl: `${GUEST_HTTP}/vmlinuz`,
                initrds: [{ url: `${GUEST_HTTP}/initrd.img` }],
                cmdline,
              }),
        );
      } else if (path === "/vmlinuz") {
        res.end(cmdlineKernel());
      } else if (path === "/initrd.img") {
        res.end("initrd bytes");
      } else {
        res.statusCode = 404;
        res.end();
      }
    });

    const run = await runIpxe(t, {
      // A secret in a setting, as the sanboot script would leave it, to catch a leak.
      // It is checked first (printing a marker, not the secret) so that its absence later means
      // something.
      script: [
        "#!ipxe",
        `set password ${CANARY}`,
        `iseq \${password} ${CANARY} && echo CANARY-IS-SET ||`,
        "dhcp",
        `chain ${GUEST_HTTP}/menu`,
        "",
      ].join("\n"),
      until: /\]KCMD/,
      timeoutMs: 150_000,
      forwards: [{ guestPort: 8080, hostPort: port }],
    });
    const s = run.serial;
    t.ok(run.matched, "reached the kernel", { serial: s.slice(-3000) });

    t.ok(s.includes("CANARY-IS-SET"), "control: the password setting holds the canary");
    t.notOk(s.includes(CANARY), "no value expanded the password setting");
    t.ok(s.includes(asSerialShows("T $ {password} || reboot")), "menu title shown literally");
    t.ok(s.includes("A?set bf-pwned yes"), "menu label with a newline shown on one line");
    t.ok(s.includes(asSerialShows(labelB)), "menu label with && # ; shown literally");
    t.same(
      hits.filter((h) => h !== "/menu"),
      ["/discover", "/discover", "/discover", "/vmlinuz", "/initrd.img"],
      "default entry chained; discovery asked again twice; then kernel and initrd",
    );
    t.equal(count(s, "this machine (52:54:00:12:34:56) has been registered"), 2, "MAC shown");
    t.ok(s.includes("bootfleet: M?set bf-pwned yes $ {password} || reboot"), "message literal");
    t.ok(
      s.includes(asSerialShows("bootfleet: -n $ {password} \u00fc: loading kernel")),
      "name literal",
    );
    // The kernel prints the command line it was handed: exact, after the initrd= argument.
    t.ok(s.includes(asSerialShows(`KCMD[initrd=initrd0 ${cmdline}]KCMD`)), "exact kernel cmdline", {
      found: /KCMD\[.*/.exec(s)?.[0],
    });
  },
);

t.test("local script boots the local disk through drive 0x80 on BIOS", { skip }, async (t) => {
  const templates = await loadTemplates(IPXE_DIR);
  const { mkdtemp, rm } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const dir = await mkdtemp(join(tmpdir(), `bf-script-${process.pid}-`));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const disk = join(dir, "local.img");
  await writeMarkerDisk(disk, "LOCAL-DISK-BOOTED");

  const run = await runIpxe(t, {
    script: renderScript(templates, "local", { name: "pc-01 || reboot" }),
    until: /LOCAL-DISK-BOOTED/,
    timeoutMs: 90_000,
    disk,
  });
  t.ok(run.matched, "the disk's boot sector ran", { serial: run.serial.slice(-2000) });
  t.ok(
    run.serial.includes("bootfleet: pc-01 || reboot: booting from the local disk"),
    "name shown literally",
  );
});

t.test("sanboot failure: a clear message and a retry, never a reboot", { skip }, async (t) => {
  const templates = await loadTemplates(IPXE_DIR);
  const { port, hits } = await httpServer(t, (_path, res) => {
    res.end(
      renderScript(templates, "sanboot", {
        name: "pc-07",
        initiatorIqn: "iqn.2024-01.lan.bootfleet:pc-07",
        chap: { username: "pc-07", password: "Secret-Secret-7" },
        system: {
          server: "10.0.2.100",
          port: 3260,
          lun: 1,
          targetIqn: "iqn.2024-01.lan.bootfleet:pc-07",
        },
        retryTimeoutMs: 1000,
      }),
    );
  });
  // iSCSI goes to a loopback port where nothing listens: the connection is refused.
  const closedPort = await new Promise<number>((resolve) => {
    const probe = createServer();
    probe.listen(0, "127.0.0.1", () => {
      const p = (probe.address() as AddressInfo).port;
      probe.close(() => resolve(p));
    });
  });
  const run = await runIpxe(t, {
    script: `#!ipxe\ndhcp\nchain ${GUEST_HTTP}/boot\n`,
    // Two failures in a row prove the retry loop came back without a reboot.
    until: /could not boot from iSCSI target[\s\S]*could not boot from iSCSI target/,
    timeoutMs: 120_000,
    forwards: [
      { guestPort: 8080, hostPort: port },
      { guestPort: 3260, hostPort: closedPort },
    ],
  });
  t.ok(run.matched, "failed twice, retrying in between", { serial: run.serial.slice(-3000) });
  t.equal(hits.length, 1, "the script was fetched once: retries happen inside it");
  t.notOk(run.exited, "QEMU still running: no reboot");
  t.ok(run.serial.includes("press r to reboot"), "offers a reboot");
  t.notOk(run.serial.includes("shell"), "and no shell");
});
