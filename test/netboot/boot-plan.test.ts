import { mkdtempSync, rmSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serve } from "@hono/node-server";
import pino from "pino";
import t from "tap";
import { bootRoutes } from "../../src/netboot/boot-routes.js";
import { evaluateProxy } from "../../src/netboot/dhcp/proxy.js";
import type { ProxyRequestInfo } from "../../src/netboot/dhcp/server.js";
import { dhcpPolicy } from "../../src/netboot/dhcp-policy.js";
import { Discovery } from "../../src/netboot/discovery.js";
import { loadTemplates } from "../../src/netboot/script/render.js";
import { issueBootToken, UsedTokens } from "../../src/netboot/script/token.js";
import { BootTimeline } from "../../src/netboot/timeline.js";
import { Store } from "../../src/store/index.js";
import type { BootAction, Machine, MachineStatus } from "../../src/store/machines.js";
import { pxeDiscover as discover } from "./dhcp/rfc-builder.js";
import { readyDisk } from "./ready-disk.js";

// One decision, two entry points: for every machine state, what the proxy-DHCP answers
// (a boot file, or "boot locally") and which script the HTTP route serves must agree.

const IPXE_DIR = join(import.meta.dirname, "../../ipxe");
const SERVER = "10.99.0.1";
const log = pino({ level: "silent" });

type Teardown = { teardown(fn: () => unknown): void };

interface Case {
  name: string;
  status: MachineStatus | "unknown";
  action?: BootAction;
  /** What the DHCP side does: a boot file, or none (the firmware boots locally). */
  dhcp: "boot file" | "none";
  /** The kind of script the HTTP route serves. */
  http: "discovery" | "local" | "sanboot" | "menu" | "custom" | "kernel";
}

const CASES: Case[] = [
  { name: "unknown MAC", status: "unknown", dhcp: "boot file", http: "discovery" },
  {
    name: "discovered",
    status: "discovered",
    action: "sanboot",
    dhcp: "boot file",
    http: "discovery",
  },
  { name: "discovered, local", status: "discovered", action: "local", dhcp: "none", http: "local" },
  {
    name: "active, sanboot",
    status: "active",
    action: "sanboot",
    dhcp: "boot file",
    http: "sanboot",
  },
  { name: "active, menu", status: "active", action: "menu", dhcp: "boot file", http: "menu" },
  { name: "active, custom", status: "active", action: "custom", dhcp: "boot file", http: "custom" },
  { name: "active, kernel", status: "active", action: "kernel", dhcp: "boot file", http: "kernel" },
  { name: "active, local", status: "active", action: "local", dhcp: "none", http: "local" },
  { name: "active, disabled", status: "active", action: "disabled", dhcp: "none", http: "local" },
  { name: "maintenance", status: "maintenance", action: "sanboot", dhcp: "none", http: "local" },
  { name: "retired", status: "retired", action: "sanboot", dhcp: "none", http: "local" },
  { name: "inactive", status: "inactive", action: "sanboot", dhcp: "none", http: "local" },
  { name: "error", status: "error", action: "sanboot", dhcp: "boot file", http: "sanboot" },
];

/** A store with one machine per case (MAC 52:54:00:bf:90:NN), each with a disk and a kernel. */
function fixture(tt: Teardown) {
  const dir = mkdtempSync(join(tmpdir(), `bf-plan-${process.pid}-`));
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const store = Store.open({ path: join(dir, "bootfleet.db"), busyTimeoutMs: 2000 });
  tt.teardown(() => store.close());
  const image = store.images.create({ name: "Golden", filename: "golden.raw", status: "ready" });
  const kernel = store.images.create({ name: "Kernel", filename: "kernel", status: "ready" });
  const macs = new Map<string, string>();
  CASES.forEach((c, i) => {
    const mac = `52:54:00:bf:90:${i.toString(16).padStart(2, "0")}`;
    macs.set(c.name, mac);
    if (c.status === "unknown") return;
    const m = store.machines.create({
      name: `pc-${i}`,
      mac_address: mac,
      status: c.status,
      boot_action: c.action ?? "sanboot",
      custom_script: "#!ipxe\necho custom\n",
      boot_image_id: kernel.id,
    });
    addDisk(store, m, image.id);
  });
  return { store, dir, macs, imageId: image.id };
}

function addDisk(store: Store, m: Machine, imageId: number) {
  store.targets.create({
    name: `${m.name}-disk`,
    iqn: `iqn.2024-01.io.bootfleet:${m.name}`,
    portal_ip: SERVER,
    machine_id: m.id,
    system_image_id: imageId,
    initiator_iqn: `iqn.2024-01.io.bootfleet:${m.name}-init`,
    chap_username: m.name,
    chap_password: "secret-secret-1",
    is_active: 1,
  });
}

t.test("the DHCP decision follows the boot plan for every machine state", async (t) => {
  const { store, macs } = fixture(t);
  const timeline = new BootTimeline({ store, log, macForIp: async () => undefined });
  const policy = dhcpPolicy({
    discovery: new Discovery({ store, log }),
    timeline,
    scriptUrl: (server, mac) => `http://${server}/boot/${mac}/token`,
    chainloadNicIpxe: false,
  });
  for (const c of CASES) {
    const mac = macs.get(c.name)!;
    for (const ipxe of [false, true]) {
      const client = discover(mac, ipxe);
      const req: ProxyRequestInfo = {
        client,
        ifname: "br0",
        serverAddress: SERVER,
        sourceAddress: "0.0.0.0",
        port: 67,
      };
      const p = policy(req);
      const outcome = evaluateProxy(
        { client, port: 67, source: { address: "0.0.0.0", port: 68 } },
        {
          serverAddress: SERVER,
          bootFiles: { bios: "undionly.kpxe", uefiX64: "snponly.efi" },
          ipxeScriptUrl: () => p.scriptUrl(),
          noBootFile: p.noBootFile,
        },
      );
      const file = outcome.action === "reply" ? outcome.reply.file : "";
      const who = `${c.name} (${ipxe ? "iPXE" : "PXE firmware"})`;
      if (c.dhcp === "none") {
        t.equal(file, "", `${who}: no boot file`);
        if (ipxe) t.equal(outcome.action, "ignore", `${who}: iPXE gets silence`);
        else t.equal(outcome.action, "reply", `${who}: firmware is told to boot locally`);
      } else {
        t.equal(outcome.action, "reply", `${who}: answered`);
        t.equal(
          file,
          ipxe ? `http://${SERVER}/boot/${mac}/token` : "undionly.kpxe",
          `${who}: boot file`,
        );
      }
    }
  }
  t.equal(
    store.machines.getByMac(macs.get("unknown MAC")!)?.status,
    "discovered",
    "the unknown MAC was recorded as discovered",
  );
});

/** The boot routes on a real HTTP server on loopback; `served` collects the script kinds. */
async function httpServer(t: Teardown, store: Store) {
  const bootKey = new Uint8Array(32).fill(7);
  const served: string[] = [];
  let port = 0;
  let peerMac: string | undefined;
  const url = (mac: string, query?: string) =>
    `http://127.0.0.1:${port}/boot/${mac.replace(/:/g, "")}/${issueBootToken(bootKey, {
      mac,
      expiresAt: Date.now() + 60_000,
    })}${query ? `?${query}` : ""}`;
  const routes = bootRoutes({
    store,
    log,
    templates: await loadTemplates(IPXE_DIR),
    bootKey,
    // The loopback peer stands for the machine whose script is asked for (the neighbour
    // check itself is proven in test/attack/binding.test.ts).
    peers: { macForIp: async () => peerMac, routedSubnets: [] },
    usedTokens: new UsedTokens(),
    ipxeBinaries: {},
    imagesDir: "/nonexistent",
    scriptUrl: url,
    fileUrl: (id, name) => `http://${SERVER}/boot/files/${id}/${name}`,
    kernelCmdline: () => "console=ttyS0",
    menuTimeoutSeconds: 10,
    sanboot: readyDisk(SERVER),
    onScriptServed: (_machine, _ip, kind) => served.push(kind),
  });
  const { Hono } = await import("hono");
  const app = new Hono().route("/boot", routes);
  const server = serve({ fetch: app.fetch, hostname: "127.0.0.1", port: 0 });
  await new Promise<void>((resolve) => server.once("listening", () => resolve()));
  port = (server.address() as AddressInfo).port;
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  /** GET the machine's script; resolves with the kind the route reports and the text. */
  const get = async (mac: string, query?: string) => {
    const before = served.length;
    peerMac = mac;
    const res = await fetch(url(mac, query));
    const text = await res.text();
    if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${text}`);
    return { kind: served.slice(before).join(","), text };
  };
  /** GET a URL as a peer the neighbour table knows as `peer` (undefined: no entry). */
  const raw = async (u: string, peer: string | undefined) => {
    peerMac = peer;
    const res = await fetch(u);
    return { status: res.status, text: await res.text() };
  };
  return { get, url, raw };
}

t.test("the HTTP script follows the boot plan for every machine state", async (t) => {
  const { store, macs } = fixture(t);
  const { get } = await httpServer(t, store);
  for (const c of CASES) {
    const { kind, text } = await get(macs.get(c.name)!);
    t.equal(kind, c.http, `${c.name}: ${c.http} script`);
    if (c.http === "local") t.match(text, /booting from the local disk/, `${c.name}: local text`);
  }
});

t.test("who may fetch each script, and how often", async (t) => {
  const { store, macs } = fixture(t);
  const { url, raw } = await httpServer(t, store);
  const stranger = "52:54:00:66:66:66";
  for (const c of CASES) {
    const mac = macs.get(c.name)!;
    const open = c.http === "discovery" || c.http === "local";
    const once = c.http === "sanboot" || c.http === "custom" || c.http === "kernel";
    const u = url(mac);
    t.equal((await raw(u, stranger)).status, open ? 200 : 403, `${c.name}: another host`);
    t.equal((await raw(u, undefined)).status, open ? 200 : 403, `${c.name}: no neighbour entry`);
    t.equal((await raw(u, mac)).status, 200, `${c.name}: the machine itself`);
    t.equal((await raw(u, mac)).status, once ? 403 : 200, `${c.name}: the same URL again`);
  }
  const refused = await raw(url(macs.get("active, sanboot")!), stranger);
  t.notMatch(refused.text, /password|secret-secret/, "a refusal carries no secret");
});

t.test("a machine put in maintenance while in the discovery loop boots locally", async (t) => {
  const { store } = fixture(t);
  const { get } = await httpServer(t, store);
  const mac = "52:54:00:bf:91:01";
  const { machine } = store.machines.recordSeen({
    mac_address: mac,
    client_arch: 0,
    client_uuid: null,
    vendor_class: null,
  });
  const image = store.images.create({ name: "G2", filename: "g2.raw", status: "ready" });
  addDisk(store, machine, image.id);
  t.equal((await get(mac)).kind, "discovery", "waiting in the discovery loop");
  store.machines.update(machine.id, { status: "maintenance" });
  const { kind, text } = await get(mac);
  t.equal(kind, "local", "the next poll is told to boot locally");
  t.notMatch(text, /CHAP|chap_password|secret-secret/i, "no disk or secret in it");
});

t.test("menu choices go through the same plan", async (t) => {
  const { store, macs } = fixture(t);
  const { get } = await httpServer(t, store);
  const menu = store.machines.getByMac(macs.get("active, menu")!)!;
  const target = store.targets.forMachine(menu.id)[0]!;
  t.equal((await get(menu.mac_address, `target=${target.id}`)).kind, "sanboot", "a disk chosen");
  t.equal((await get(menu.mac_address, "local=1")).kind, "local", "the local disk chosen");
  const maintenance = macs.get("maintenance")!;
  t.equal(
    (await get(maintenance, `target=${target.id}`)).kind,
    "local",
    "a menu URL kept from before maintenance does not reach a disk",
  );
});

t.test("two targets: the menu goes to the machine only, each entry once", async (t) => {
  const { store, imageId } = fixture(t);
  const { url, raw } = await httpServer(t, store);
  const mac = "52:54:00:bf:91:02";
  const pc = store.machines.create({ name: "two-disks", mac_address: mac, status: "active" });
  addDisk(store, pc, imageId);
  const second = store.targets.create({
    name: "two-disks-games",
    iqn: "iqn.2024-01.io.bootfleet:two-disks:t99",
    portal_ip: SERVER,
    machine_id: pc.id,
    system_image_id: imageId,
    initiator_iqn: "iqn.2024-01.io.bootfleet:two-disks-init",
    chap_username: "two-disks_t99",
    chap_password: "secret-secret-2",
    is_active: 1,
  });
  const stranger = "52:54:00:66:66:66";
  const menu = url(mac);
  t.equal((await raw(menu, stranger)).status, 403, "another host gets no menu");
  const shown = await raw(menu, mac);
  t.equal(shown.status, 200);
  t.match(shown.text, /^choose /m, "the machine gets a menu");
  t.notMatch(shown.text, /secret-secret/, "with no secret in it");
  t.equal((await raw(menu, mac)).status, 200, "which it may fetch again");
  const entry = url(mac, `target=${second.id}`);
  t.equal((await raw(entry, stranger)).status, 403, "another host gets no entry");
  const booted = await raw(entry, mac);
  t.equal(booted.status, 200);
  t.match(booted.text, /two-disks:t99/, "the entry sanboots its own target");
  t.equal((await raw(entry, mac)).status, 403, "an entry's URL works once");
});
