// Our encoded replies read by an independent parser: Wireshark's DHCP and PXE dissectors.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { classifyClient } from "../../../src/netboot/dhcp/client.js";
import { decodeDhcp, encodeDhcp } from "../../../src/netboot/dhcp/packet.js";
import { decideProxyReply, type ProxyContext } from "../../../src/netboot/dhcp/proxy.js";

function have(cmd: string): boolean {
  try {
    execFileSync(cmd, ["-v"], { stdio: "ignore", timeout: 20_000 });
    return true;
  } catch {
    return false;
  }
}
const missing = !have("tshark") || !have("text2pcap");

const FIXTURES = join(import.meta.dirname, "../../fixtures/dhcp");
const load = (name: string) => {
  const r = decodeDhcp(
    Buffer.from(readFileSync(join(FIXTURES, `${name}.hex`), "utf8").trim(), "hex"),
  );
  if (!r.ok) throw new Error(r.error);
  return classifyClient(r.packet);
};

const ctx: ProxyContext = {
  serverAddress: "10.99.0.1",
  bootFiles: { bios: "undionly.kpxe", uefiX64: "snponly.efi" },
  ipxeScriptUrl: (mac) => `http://10.99.0.1/boot/${mac}/${"s".repeat(140)}`,
};

const FIELDS = [
  "dhcp.option.dhcp",
  "dhcp.ip.your",
  "dhcp.ip.server",
  "dhcp.hw.mac_addr",
  "dhcp.file",
  "dhcp.option.vendor_class_id",
  "dhcp.option.dhcp_server_id",
  "dhcp.option.bootfile_name",
  "dhcp.option.vendor.pxeclient.discovery_control",
  "dhcp.option.vendor.pxeclient.boot_menu.type",
  "dhcp.option.vendor.pxeclient.menu_prompt.timeout",
  "dhcp.option.vendor.pxeclient.boot_item.type",
];

t.test(
  "tshark dissects our replies as we meant them",
  { skip: missing ? "needs tshark and text2pcap" : false },
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), `bf-dhcp-${process.pid}-`));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));

    const cases = [
      { name: "BIOS offer", req: load("ipxe-rom-e1000-discover"), port: 67, ctx: { ...ctx } },
      { name: "OVMF offer", req: load("ovmf-pxe-discover"), port: 67, ctx },
      { name: "OVMF 4011 ack", req: load("ovmf-pxe-request-4011"), port: 4011, ctx },
      { name: "iPXE ROM 4011 ack", req: load("ipxe-rom-e1000-request-4011"), port: 4011, ctx },
      {
        name: "local boot",
        req: load("ovmf-pxe-request-4011"),
        port: 4011,
        ctx: { ...ctx, noBootFile: true },
      },
    ] as const;
    // The first case is a BIOS ROM that is iPXE; make the non-iPXE BIOS offer from the same packet.
    const biosNotIpxe = load("ipxe-rom-e1000-discover");
    biosNotIpxe.isIpxe = false;

    const replies = [
      ...cases.map((c) => ({
        name: c.name,
        d: decideProxyReply(
          { client: c.req, port: c.port, source: { address: "10.99.0.91", port: 68 } },
          c.ctx,
        ),
      })),
      {
        name: "BIOS PXE ROM offer",
        d: decideProxyReply(
          { client: biosNotIpxe, port: 67, source: { address: "0.0.0.0", port: 68 } },
          ctx,
        ),
      },
    ];
    let dump = "";
    for (const r of replies) {
      if (!r.d) throw new Error(`${r.name}: no reply`);
      const bytes = encodeDhcp(r.d.reply);
      for (let off = 0; off < bytes.length; off += 16) {
        const line = [...bytes.subarray(off, off + 16)]
          .map((b) => b.toString(16).padStart(2, "0"))
          .join(" ");
        dump += `${off.toString(16).padStart(6, "0")} ${line}\n`;
      }
    }
    writeFileSync(join(dir, "replies.txt"), dump);
    execFileSync(
      "text2pcap",
      ["-q", "-u", "67,68", join(dir, "replies.txt"), join(dir, "replies.pcap")],
      {
        timeout: 20_000,
        stdio: "ignore",
      },
    );
    const tsh = (args: string[]) =>
      execFileSync("tshark", ["-r", join(dir, "replies.pcap"), ...args], {
        timeout: 60_000,
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
      });
    const verbose = tsh(["-V"]);
    t.notMatch(verbose, /Malformed|Expert Info \((Error|Warning)/, "no malformed or warned fields");
    const rows = tsh(["-T", "fields", "-E", "separator=|", ...FIELDS.flatMap((f) => ["-e", f])])
      .trim()
      .split("\n")
      .map((l) => Object.fromEntries(l.split("|").map((v, i) => [FIELDS[i]!, v])));
    t.equal(rows.length, replies.length, "one dissected packet per reply");
    for (const [i, row] of rows.entries()) {
      const name = replies[i]!.name;
      t.equal(row["dhcp.ip.your"], "0.0.0.0", `${name}: yiaddr`);
      t.equal(row["dhcp.ip.server"], "10.99.0.1", `${name}: siaddr`);
      t.equal(row["dhcp.option.dhcp_server_id"], "10.99.0.1", `${name}: option 54`);
      t.equal(row["dhcp.option.vendor_class_id"], "PXEClient", `${name}: option 60`);
    }
    const [biosIpxe, ovmfOffer, ovmfAck, romAck, local, biosRom] = rows as Record<string, string>[];
    t.equal(biosIpxe!["dhcp.option.dhcp"], "2");
    t.equal(biosIpxe!["dhcp.file"], "", "iPXE script URL is too long for file");
    t.match(
      biosIpxe!["dhcp.option.bootfile_name"],
      /^http:\/\/10\.99\.0\.1\/boot\/52:54:00:bf:00:01\/s{140}$/,
      "split option 67 rejoined by tshark",
    );
    t.equal(ovmfOffer!["dhcp.file"], "snponly.efi");
    t.equal(ovmfOffer!["dhcp.option.vendor.pxeclient.discovery_control"], "", "OVMF offer: no 43");
    t.equal(ovmfAck!["dhcp.option.dhcp"], "5");
    t.equal(ovmfAck!["dhcp.hw.mac_addr"], "52:54:00:bf:00:02");
    t.equal(romAck!["dhcp.option.vendor.pxeclient.boot_item.type"], "32768", "boot item echoed");
    t.equal(local!["dhcp.option.vendor.pxeclient.boot_menu.type"], "0", "local boot item");
    t.equal(local!["dhcp.file"], "");
    t.equal(biosRom!["dhcp.option.vendor.pxeclient.discovery_control"], "0x08");
    t.equal(biosRom!["dhcp.option.vendor.pxeclient.boot_menu.type"], "32768");
    t.equal(biosRom!["dhcp.option.vendor.pxeclient.menu_prompt.timeout"], "0");
    t.equal(biosRom!["dhcp.file"], "undionly.kpxe");
  },
);
