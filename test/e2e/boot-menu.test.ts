// biome-ignore-all lint/suspicious/noTemplateCurlyInString: "${...}" in these strings is iPXE syntax
import { join } from "node:path";
import t from "tap";
import { startLanRig } from "../helpers/lan-rig.js";
import { asSerialShows, writeMarkerDisk } from "../netboot/script/fixtures/qemu-ipxe.js";

// A PC with two targets (a work image and a games image) boots through a menu on real
// firmware (QEMU's iPXE ROM), real iSCSI (tgtd) and reflink overlays: left alone it boots
// its default entry after the room's time-out; with the other entry chosen on its keyboard
// (keys pressed through the QEMU monitor) it boots the other image.
const skip =
  process.getuid?.() === 0 ? false : "needs root: namespaces, loop-mounted XFS, tgtd, QEMU";
// Generous: under TCG on a shared machine one boot has taken minutes.
const BOOT_TIMEOUT = 600_000;
const MAC = "52:54:00:bf:70:0a";
const WORK = "BOOT-MENU-IMAGE-WORK";
const GAMES = "BOOT-MENU-IMAGE-GAMES";
// An admin's description is shown as text: it cannot run, expand or end the menu.
const WORK_LABEL = "Work && reboot # ${password}";

t.test("a PC with two targets boots its default, or the entry chosen", { skip }, async (t) => {
  const images: Record<string, number> = {};
  let machineId = 0;
  const { lan, api } = await startLanRig(t, {
    name: "bf-e2e-menu",
    net: "10.99.0",
    fsBytes: 2 * 1024 ** 3,
    // Two golden images whose boot sectors print different markers, and the PC without
    // a target yet: the admin sets those up through the API.
    async seed(store, data) {
      for (const [name, marker] of [
        ["work", WORK],
        ["games", GAMES],
      ] as const) {
        const file = join(data, "images", `${name}.raw`);
        await writeMarkerDisk(file, marker);
        const image = store.images.create({
          name: `${name} image`,
          filename: `${name}.raw`,
          status: "ready",
          format: "raw",
        });
        store.images.addVersion(image.id, { path: file, size_bytes: 64 * 1024 * 1024 });
        images[name] = image.id;
      }
      machineId = store.machines.create({
        name: "menu-pc",
        mac_address: MAC,
        status: "active",
        boot_action: "sanboot",
        overlay_policy: "persistent",
      }).id;
    },
  });
  const machine = { id: machineId };

  const work = api("POST", "/targets", {
    machine_id: machine.id,
    system_image_id: images.work,
    description: WORK_LABEL,
  });
  t.equal(work.status, 201, "the first target");
  const games = api("POST", "/targets", { machine_id: machine.id, system_image_id: images.games });
  t.equal(games.status, 201, "a second target for the same machine");
  t.not(games.json.iqn, work.json.iqn, "each target has its own IQN");
  const room = api("POST", "/locations", { name: "lab 3", menu_timeout_seconds: 3 });
  t.equal(room.status, 201);
  const put = api("PUT", `/machines/${machine.id}`, {
    location_id: room.json.id,
    default_target_id: games.json.id,
  });
  t.equal(put.status, 200);
  t.equal(put.json.default_target_id, games.json.id, "the games image is the default");

  // Left alone: the menu waits the room's 3 s, then boots the default (games).
  const first = lan.startBiosClient({ bridge: "br0", mac: MAC, monitor: true });
  t.teardown(() => first.kill());
  await first.waitFor(new RegExp(`${WORK}|${GAMES}`), BOOT_TIMEOUT);
  const s1 = first.serial();
  t.match(s1, GAMES, "left alone, the default entry booted");
  t.notMatch(s1, WORK, "and not the other one");
  t.ok(bootedFrom(s1, games.json.iqn), "from the games target");
  t.ok(s1.includes(asSerialShows("Work && reboot # $ {password}")), "the label shown as text");
  t.ok(s1.includes("games image"), "an entry without a description shows its image's name");
  first.kill();

  // The machine's own time-out overrides its room's: long enough to choose by hand.
  t.equal(api("PUT", `/machines/${machine.id}`, { menu_timeout_seconds: 120 }).status, 200);
  const second = lan.startBiosClient({ bridge: "br0", mac: MAC, monitor: true });
  t.teardown(() => second.kill());
  await second.waitFor(/games image/, BOOT_TIMEOUT);
  // Work is the entry above the default one.
  await second.sendKey("up");
  await second.sendKey("ret");
  await second.waitFor(new RegExp(`${WORK}|${GAMES}`), BOOT_TIMEOUT);
  const s2 = second.serial();
  t.match(s2, WORK, "the chosen entry booted");
  t.notMatch(s2, GAMES, "and not the default");
  t.ok(bootedFrom(s2, work.json.iqn), "from the work target");
  second.kill();

  // Both boots were served their own target's overlay.
  const targets = api("GET", `/targets?machine_id=${machine.id}`).json as {
    id: number;
    status: string;
  }[];
  t.same(
    targets.map((x) => x.status),
    ["active", "active"],
    "the reconciler serves both targets",
  );
});

/** Whether the sanboot script's line names this target (the screen wraps at 80 columns). */
function bootedFrom(serial: string, iqn: string): boolean {
  return serial.replace(/\s+/g, "").includes(`bootingfromiSCSItarget${iqn}on10.99.0.1`);
}
