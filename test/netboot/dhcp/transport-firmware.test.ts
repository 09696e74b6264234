// A real PXE ROM (QEMU's iPXE option ROM, BIOS) on a bridge: its DISCOVER, sent from
// 0.0.0.0 by firmware rather than by a socket, must reach the transport tagged with the
// bridge it came in on, not with the other configured interface.
import { spawn, spawnSync } from "node:child_process";
import t from "tap";
import { ip, type JsonProc, startServer } from "../../fixtures/dhcp-transport/harness.js";

const skip =
  process.getuid?.() !== 0
    ? "needs root: network namespaces, tap devices, raw sockets"
    : spawnSync("qemu-system-x86_64", ["--version"]).status !== 0
      ? "needs qemu-system-x86_64 (Debian packages qemu-system-x86, ipxe-qemu)"
      : false;

t.test(
  "a DISCOVER from QEMU's PXE ROM is reported on the bridge it came in on",
  { skip },
  async (t) => {
    const ns = `bfdt${process.pid}fw`;
    const mac = "52:54:00:bf:07:01";
    let server: JsonProc | undefined;
    let qemuPid: number | undefined;
    t.teardown(async () => {
      if (qemuPid) {
        try {
          process.kill(qemuPid, "SIGKILL");
        } catch {}
      }
      await server?.stop();
      try {
        ip("netns", "del", ns);
      } catch {}
    });
    ip("netns", "add", ns);
    ip("-n", ns, "link", "set", "lo", "up");
    ip("-n", ns, "link", "add", "br0", "type", "bridge");
    ip("-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap");
    ip("-n", ns, "link", "set", "tap0", "master", "br0");
    ip("-n", ns, "addr", "add", "10.202.0.1/24", "dev", "br0");
    ip("-n", ns, "link", "add", "other0", "type", "veth", "peer", "name", "other1");
    ip("-n", ns, "addr", "add", "10.202.1.1/24", "dev", "other0");
    for (const dev of ["br0", "tap0", "other0", "other1"]) ip("-n", ns, "link", "set", dev, "up");

    server = startServer(ns, {
      interfaces: [
        { name: "other0", address: "10.202.1.1" },
        { name: "br0", address: "10.202.0.1" },
      ],
    });
    const first = await server.waitFor(
      (e) => e.ev === "ready" || e.ev === "error",
      30_000,
      "ready",
    );
    t.equal(first.ev, "ready", `transport opened ${first.message ?? ""}`);

    const qemu = spawn(
      "ip",
      [
        ...["netns", "exec", ns, "qemu-system-x86_64", "-machine", "accel=tcg", "-m", "128"],
        ...["-boot", "n", "-display", "none", "-serial", "none", "-monitor", "none"],
        ...["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"],
        ...["-device", `e1000,netdev=n0,mac=${mac}`],
      ],
      { stdio: "ignore" },
    );
    qemuPid = qemu.pid;

    // BOOTREQUEST (op 1) from the ROM's MAC carrying the DHCP magic cookie (RFC 2131).
    const chaddr = mac.replaceAll(":", "");
    const d = await server.waitFor(
      (e) =>
        e.ev === "datagram" &&
        e.payload.startsWith("01") &&
        e.payload.slice(56, 68) === chaddr &&
        e.payload.slice(472, 480) === "63825363",
      90_000,
      "a DHCP request from the PXE ROM",
    );
    t.same(
      [d.ifname, d.localAddress, d.srcAddress, d.srcPort, d.dstAddress, d.dstPort],
      ["br0", "10.202.0.1", "0.0.0.0", 68, "255.255.255.255", 67],
    );
    // Option 60 "PXEClient...": the request is a PXE one, as a proxy-DHCP server needs.
    t.match(Buffer.from(d.payload, "hex").toString("latin1"), /PXEClient/);
  },
);
