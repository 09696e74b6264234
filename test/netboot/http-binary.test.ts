// UEFI HTTP boot's transfer phase: iPXE's EFI binary fetched from /boot/ipxe/:name is
// stamped on the machine's boot session as a TFTP transfer is, so the timeline shows it
// and the iPXE it starts gets its script instead of a chainload.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import pino from "pino";
import t from "tap";
import { bootRoutes } from "../../src/netboot/boot-routes.js";
import { loadTemplates } from "../../src/netboot/script/render.js";
import { UsedTokens } from "../../src/netboot/script/token.js";
import { BootTimeline } from "../../src/netboot/timeline.js";
import { Store } from "../../src/store/index.js";

const IPXE_DIR = join(import.meta.dirname, "../../ipxe");
const MAC = "52:54:00:bf:61:01";
const log = pino({ level: "silent" });

t.test("an iPXE binary fetched over HTTP is the boot's transfer phase", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), `bf-httpbin-${process.pid}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const binary = join(dir, "snponly.efi");
  const content = Buffer.alloc(300_000, 0x5a);
  writeFileSync(binary, content);
  const store = Store.open({ path: join(dir, "bootfleet.db"), busyTimeoutMs: 2000 });
  t.teardown(() => store.close());
  const machine = store.machines.create({
    name: "lab-http",
    mac_address: MAC,
    status: "active",
    boot_action: "sanboot",
  });
  // The HTTP boot offer opened this boot's session.
  store.sessions.start({ machine_id: machine.id, boot_method: "x64-http" });
  store.sessions.stampPhase(machine.id, "dhcp_offer_at");

  const timeline = new BootTimeline({ store, log, macForIp: async () => MAC });
  const recorded: Promise<void>[] = [];
  const routes = bootRoutes({
    store,
    log,
    templates: await loadTemplates(IPXE_DIR),
    bootKey: new Uint8Array(32).fill(3),
    peers: { macForIp: async () => MAC, routedSubnets: [] },
    usedTokens: new UsedTokens(),
    ipxeBinaries: { "snponly.efi": binary },
    imagesDir: dir,
    scriptUrl: () => "http://127.0.0.1/boot/x",
    fileUrl: () => "http://127.0.0.1/boot/files/x",
    kernelCmdline: () => "",
    menuTimeoutSeconds: 10,
    onBinaryServed: (e) => recorded.push(timeline.binaryServed(e)),
  });
  const server = serve({
    fetch: new Hono().route("/boot", routes).fetch,
    hostname: "127.0.0.1",
    port: 0,
  });
  await new Promise<void>((resolve) => server.once("listening", () => resolve()));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/boot/ipxe/snponly.efi`;

  // EDK2 asks for the size first: a HEAD is answered with it and is no transfer.
  const head = await fetch(url, { method: "HEAD" });
  t.equal(head.status, 200);
  t.equal(head.headers.get("content-length"), String(content.length), "HEAD gives the size");
  t.equal(recorded.length, 0, "a HEAD is not the transfer");
  t.notOk(timeline.chainloadedThisBoot(store.machines.get(machine.id)), "nothing loaded yet");

  const res = await fetch(url);
  t.ok(Buffer.from(await res.arrayBuffer()).equals(content), "the binary, whole");
  for (let i = 0; recorded.length === 0 && i < 200; i++)
    await new Promise((r) => setTimeout(r, 10));
  t.equal(recorded.length, 1, "one transfer reported");
  await Promise.all(recorded);
  const session = store.sessions.current(machine.id);
  t.ok(session?.tftp_done_at, "transfer phase stamped");
  t.equal(session?.tftp_file, "snponly.efi");
  t.equal(session?.tftp_bytes, content.length);
  t.equal(session?.boot_method, "x64-http", "the session says the transfer was HTTP");
  t.ok(
    timeline.chainloadedThisBoot(store.machines.get(machine.id)),
    "the iPXE it starts is bootfleet's: it gets its script, not another chainload",
  );

  const missing = await fetch(url.replace("snponly.efi", "ipxe.efi"));
  t.equal(missing.status, 404, "only the configured binaries");
});
