import { join } from "node:path";
import t from "tap";
import { BOOT_SECTOR_OK, startBootLan } from "../helpers/boot-lan.js";
import { adminPageIn, browserSkipReason, rootSkipReason, screenshotDir } from "./helpers.js";

const rootSkip = rootSkipReason("namespaces, loop-mounted XFS, tgtd, QEMU");
const BOOT_TIMEOUT = 150_000;
const MAC = "52:54:00:bf:70:0b";
/** The phases of a good boot, as src/fleet/state.ts names them, in order. */
const PHASES = ["pxe", "ipxe", "script_served", "iscsi_logged_in", "booted"];

/**
 * The fleet grid while a real PC boots: a QEMU BIOS PC sanboots the test boot sector from
 * bootfleet in the e2e namespace, and its tile on the open page moves through every phase
 * in order, seen by a MutationObserver in the page, without a reload. The daemon and
 * Chromium run in the LAN's namespace (the page is http://<server>/ as a PC's admin would
 * reach it), the PC on the LAN's bridge.
 */
t.test(
  "dashboard: a booting PC's tile moves through its phases, live",
  { skip: browserSkipReason() ?? rootSkip ?? false },
  async (t) => {
    const boot = await startBootLan(t, {
      name: "bf-web-boot",
      subnet: "10.95.0",
      mac: MAC,
      machineName: "grid-pc",
    });
    const base = `http://${boot.server}`;

    const w = await adminPageIn(t, boot.lan.ns, base, boot.adminPassword);
    const page = w.page;
    const tile = page.locator(`li.tile[data-machine-id="${boot.machineId}"]`);
    await tile.waitFor({ timeout: 90_000 }).catch(async (err: Error) => {
      throw new Error(`${err.message}\nThe page said: ${await page.locator("main").textContent()}`);
    });
    await page.locator(".live-live").waitFor();

    // Every state the tile shows, as the DOM changes (the tile may be re-rendered whole,
    // so the observer watches the page and reads the tile's state after each change).
    await page.evaluate(`(() => {
      const sel = 'li.tile[data-machine-id="${boot.machineId}"] .tile-state';
      window.bfStates = [];
      const note = () => {
        const s = document.querySelector(sel)?.getAttribute("data-state");
        if (s && window.bfStates[window.bfStates.length - 1] !== s) window.bfStates.push(s);
      };
      note();
      new MutationObserver(note).observe(document.body, {
        subtree: true, childList: true, attributes: true, attributeFilter: ["data-state"],
      });
      window.bfMarker = 42;
    })()`);

    const pc = boot.lan.startBiosClient({ bridge: "br0", mac: MAC });
    t.teardown(() => pc.kill());
    await pc.waitFor(BOOT_SECTOR_OK, BOOT_TIMEOUT);
    // Login is polled every second, I/O on the monitor's next tick: the tile says booted
    // soon after the PC wrote its disk (bounded wait).
    await tile.locator('.tile-state[data-state="booted"]').waitFor({ timeout: 60_000 });

    const seen = (await page.evaluate("window.bfStates")) as string[];
    t.comment(`states the tile showed: ${seen.join(" → ")}`);
    t.same(
      seen.filter((s) => PHASES.includes(s)),
      PHASES,
      "the tile passed through every phase of the boot, in order",
    );
    t.match(seen[0], /^(unknown|off)$/, "it started as never booted");
    t.equal(await page.evaluate("window.bfMarker"), 42, "without a reload");
    t.same(w.cspViolations, [], "no CSP violation");
    await page.screenshot({ path: join(screenshotDir(t), "grid-booted.png"), fullPage: true });
  },
);
