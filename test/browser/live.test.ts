import { readFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { startDaemon, tempDir } from "../helpers/daemon.js";
import { TestLan } from "../helpers/lan.js";
import { ascii, opt, rawPacket } from "../netboot/dhcp/rfc-builder.js";
import { adminPageIn, browserSkipReason, rootSkipReason, screenshotDir } from "./helpers.js";

const rootSkip = rootSkipReason("the daemon's proxy-DHCP runs in a network namespace of its own");

const MAC = [0x52, 0x54, 0x00, 0x77, 0x00, 0x01];

/** Sends one UDP datagram (hex payload) from port 68 to <address>:67, then exits. */
const SEND = `
const dgram = require("node:dgram");
const [hex, address] = process.argv.slice(1);
const s = dgram.createSocket({ type: "udp4", reuseAddr: true });
s.bind(68, () => s.send(Buffer.from(hex, "hex"), 67, address, (err) => {
  s.close();
  if (err) { console.error(err.message); process.exit(1); }
}));
`;

/**
 * The grid follows the daemon's own events: a PC on the LAN sends a PXE DHCP DISCOVER,
 * the daemon's proxy-DHCP discovers it (machine_discovered), and its tile appears on the
 * open page, marked with the event, without a reload. The daemon and the browser run in
 * the LAN's network namespace, the PC in a namespace of its own on the same bridge.
 */
t.test(
  "dashboard: a PC that asks for a boot appears on the grid without a reload",
  { skip: browserSkipReason() ?? rootSkip ?? false },
  async (t) => {
    const lan = TestLan.create(t, "bf-web", [{ bridge: "br0", address: "10.96.0.1" }]);
    const data = tempDir(t, `bf-web-live-${process.pid}-`);
    const daemon = await startDaemon(t, {
      wrapper: lan.wrapper,
      env: {
        BOOTFLEET_DATA_DIR: data,
        BOOTFLEET_HTTP_LISTEN: "127.0.0.1:0",
        BOOTFLEET_TFTP_ENABLED: "false",
        BOOTFLEET_DHCP_ENABLED: "true",
        BOOTFLEET_NETBOOT_INTERFACES: "br0",
      },
      timeoutMs: 60_000,
    });
    const base = `http://127.0.0.1:${daemon.port}`;
    const password = readFileSync(join(data, "initial-admin-password"), "utf8").trim();

    const w = await adminPageIn(t, lan.ns, base, password);
    const page = w.page;
    await page.getByText("No machines yet.").waitFor();
    await page.locator(".live-live").waitFor();
    await page.evaluate("window.bfMarker = 42");

    const pc = lan.addHost("br0", "10.96.0.50");
    const discover = rawPacket({
      chaddr: MAC,
      xid: 0x0b0f0001,
      flags: 0x8000,
      options: [
        ...opt(53, [1]),
        ...opt(60, ascii("PXEClient:Arch:00000:UNDI:002001")),
        ...opt(93, [0, 0]),
        ...opt(97, [0, ...Array.from({ length: 16 }, (_, i) => i + 1)]),
        255,
      ],
    });
    lan.execIn(pc, process.execPath, ["-e", SEND, discover.toString("hex"), "10.96.0.1"]);

    const tile = page.locator("li.tile", { hasText: "52:54:00:77:00:01" });
    await tile.waitFor();
    // The DISCOVER both registers the PC (machine_discovered) and opens its boot, so the
    // newest event on the tile is that one or the fleet's machine_state (pxe) after it.
    t.match(
      await tile.locator(".tile-event").textContent(),
      /^machine (discovered|state) at /,
      "the tile came with the discovery's events",
    );
    t.match(
      await tile.locator(".tile-state").getAttribute("data-state"),
      /^(discovered|pxe)$/,
      "a PC that only sent a DISCOVER is discovered, or in its PXE phase",
    );
    t.equal(await page.evaluate("window.bfMarker"), 42, "without a reload");
    t.same(w.cspViolations, [], "no CSP violation");
    await page.screenshot({ path: join(screenshotDir(t), "live-discovered.png"), fullPage: true });
  },
);
