import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createConnection, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * A test LAN inside a network namespace of its own (../shared/TESTING.md): bridges with an
 * address each, tap devices for QEMU clients, dnsmasq as the site's DHCP server that only
 * hands out addresses, and firmware clients whose serial console is read for markers.
 * Everything it makes is removed in teardown, and only its own processes are ended.
 */
type Teardown = { teardown(fn: () => void | Promise<void>): void };

export interface Subnet {
  bridge: string;
  /** The server's address on this bridge, e.g. 10.99.0.1 (a /24 is assumed). */
  address: string;
  /** The range the site DHCP server hands out, e.g. ["10.99.0.50", "10.99.0.99"]. */
  dhcpRange?: [string, string];
}

export class TestLan {
  readonly dir: string;
  private procs: ChildProcess[] = [];
  private taps = 0;
  private hosts = 0;
  private children: string[] = [];

  private constructor(
    readonly ns: string,
    readonly subnets: Subnet[],
  ) {
    this.dir = mkdtempSync(join(tmpdir(), `${ns}-`));
  }

  static create(t: Teardown, name: string, subnets: Subnet[]): TestLan {
    const ns = `${name}-${process.pid}`.slice(0, 30);
    const lan = new TestLan(ns, subnets);
    execFileSync("ip", ["netns", "add", ns]);
    t.teardown(() => lan.destroy());
    lan.exec("ip", ["link", "set", "lo", "up"]);
    for (const s of subnets) {
      lan.exec("ip", ["link", "add", s.bridge, "type", "bridge"]);
      lan.exec("ip", ["addr", "add", `${s.address}/24`, "dev", s.bridge]);
      lan.exec("ip", ["link", "set", s.bridge, "up"]);
    }
    return lan;
  }

  /** Runs a command inside the namespace and returns its stdout. */
  exec(cmd: string, args: string[], opts: { input?: string } = {}): string {
    return execFileSync("ip", ["netns", "exec", this.ns, cmd, ...args], {
      encoding: "utf8",
      input: opts.input,
      stdio: ["pipe", "pipe", "pipe"],
    });
  }

  /** The prefix that runs a command inside the namespace. */
  get wrapper(): string[] {
    return ["ip", "netns", "exec", this.ns];
  }

  /** Starts a long-running process inside the namespace; it is killed in teardown. */
  spawn(cmd: string, args: string[], logName?: string): ChildProcess {
    const p = spawn("ip", ["netns", "exec", this.ns, cmd, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    const chunks: Buffer[] = [];
    p.stdout?.on("data", (d: Buffer) => chunks.push(d));
    p.stderr?.on("data", (d: Buffer) => chunks.push(d));
    (p as ChildProcess & { logText?: () => string }).logText = () =>
      Buffer.concat(chunks).toString();
    void logName;
    this.procs.push(p);
    return p;
  }

  /** The site's DHCP server: addresses only, no boot options (bootfleet is the proxy). */
  startSiteDhcp(subnet: Subnet): ChildProcess {
    const [from, to] = subnet.dhcpRange ?? [];
    if (!from || !to) throw new Error(`subnet ${subnet.bridge} has no dhcpRange`);
    return this.spawn("dnsmasq", [
      "--no-daemon",
      "--port=0",
      "--no-resolv",
      "--no-hosts",
      `--interface=${subnet.bridge}`,
      "--bind-interfaces",
      `--dhcp-range=${from},${to},1h`,
      `--dhcp-leasefile=${join(this.dir, `${subnet.bridge}.leases`)}`,
      `--pid-file=${join(this.dir, `${subnet.bridge}.dnsmasq.pid`)}`,
      "--log-dhcp",
    ]);
  }

  /**
   * Another host on a bridge: a namespace of its own joined by a veth pair, with the
   * given address (and MAC, when given: a host that plays a machine without firmware).
   * Returns its namespace name, for execIn.
   */
  addHost(bridge: string, address: string, mac?: string): string {
    const host = `${this.ns}-h${this.hosts++}`;
    const outer = `vh${this.hosts}${process.pid % 10000}`;
    execFileSync("ip", ["netns", "add", host]);
    this.children.push(host);
    this.exec("ip", ["link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", host]);
    this.exec("ip", ["link", "set", outer, "master", bridge]);
    this.exec("ip", ["link", "set", outer, "up"]);
    for (const args of [
      ["link", "set", "lo", "up"],
      ...(mac ? [["link", "set", "eth0", "address", mac]] : []),
      ["addr", "add", `${address}/24`, "dev", "eth0"],
      ["link", "set", "eth0", "up"],
    ]) {
      execFileSync("ip", ["netns", "exec", host, "ip", ...args]);
    }
    return host;
  }

  /** Runs a command inside a host made by addHost and returns its stdout. */
  execIn(host: string, cmd: string, args: string[]): string {
    return execFileSync("ip", ["netns", "exec", host, cmd, ...args], { encoding: "utf8" });
  }

  /** A tap device on a bridge, for one QEMU client. */
  addTap(bridge: string): string {
    const tap = `tap${this.taps++}`;
    this.exec("ip", ["tuntap", "add", "dev", tap, "mode", "tap"]);
    this.exec("ip", ["link", "set", tap, "master", bridge]);
    this.exec("ip", ["link", "set", tap, "up"]);
    return tap;
  }

  /**
   * A BIOS PC whose NIC boots with QEMU's iPXE option ROM (it sends option 175 and user
   * class "iPXE", architecture 0). The screen goes to the serial log through sga.
   */
  startBiosClient(opts: {
    bridge: string;
    mac: string;
    nic?: string;
    disk?: string;
    memoryMiB?: number;
    /** The serial console also takes input (FirmwareClient.type), e.g. to log in. */
    serialInput?: boolean;
    /** A QEMU monitor socket, for keys on the PC's keyboard (FirmwareClient.sendKey). */
    monitor?: boolean;
  }): FirmwareClient {
    const tap = this.addTap(opts.bridge);
    const serial = join(this.dir, `${tap}.serial.log`);
    const input = opts.serialInput ? join(this.dir, `${tap}.serial.sock`) : undefined;
    const monitor = opts.monitor ? join(this.dir, `${tap}.monitor.sock`) : undefined;
    const args = [
      "-machine",
      "accel=tcg",
      "-m",
      String(opts.memoryMiB ?? 256),
      "-boot",
      "n",
      "-netdev",
      `tap,id=n0,ifname=${tap},script=no,downscript=no`,
      "-device",
      `${opts.nic ?? "e1000"},netdev=n0,mac=${opts.mac}`,
      "-display",
      "none",
      ...serialArgs(serial, input),
      "-device",
      "sga",
      ...(monitor ? ["-monitor", `unix:${monitor},server=on,wait=off`] : []),
      "-no-reboot",
    ];
    return new FirmwareClient(this.spawn("qemu-system-x86_64", args), serial, input, monitor);
  }

  /**
   * A UEFI PC (OVMF) that boots with the firmware's own network stack: `romfile=` keeps
   * QEMU's iPXE ROM out. With `boot: "pxe"` (the default) it asks for a boot file as
   * architecture 7. With `boot: "http"` OVMF's PXE is switched off through its fw_cfg
   * knobs (OvmfPkg/RUNTIME_CONFIG.md), so the NIC's first boot option is UEFI HTTPv4: the
   * firmware asks as vendor class HTTPClient, architecture 16, and fetches the URL it is
   * given with its own HTTP client.
   */
  startUefiClient(opts: {
    bridge: string;
    mac: string;
    memoryMiB?: number;
    serialInput?: boolean;
    boot?: "pxe" | "http";
  }): FirmwareClient {
    const tap = this.addTap(opts.bridge);
    const serial = join(this.dir, `${tap}.serial.log`);
    const input = opts.serialInput ? join(this.dir, `${tap}.serial.sock`) : undefined;
    const vars = join(this.dir, `${tap}.OVMF_VARS.fd`);
    copyFileSync(findOvmf("OVMF_VARS"), vars);
    const args = [
      "-machine",
      "q35,accel=tcg",
      "-m",
      String(opts.memoryMiB ?? 512),
      "-drive",
      `if=pflash,format=raw,readonly=on,file=${findOvmf("OVMF_CODE")}`,
      "-drive",
      `if=pflash,format=raw,file=${vars}`,
      "-netdev",
      `tap,id=n0,ifname=${tap},script=no,downscript=no`,
      "-device",
      `virtio-net-pci,netdev=n0,mac=${opts.mac},romfile=`,
      ...(opts.boot === "http"
        ? [
            "-fw_cfg",
            "name=opt/org.tianocore/IPv4PXESupport,string=no",
            "-fw_cfg",
            "name=opt/org.tianocore/IPv6PXESupport,string=no",
          ]
        : []),
      "-display",
      "none",
      ...serialArgs(serial, input),
      "-no-reboot",
    ];
    return new FirmwareClient(this.spawn("qemu-system-x86_64", args), serial, input);
  }

  destroy(): void {
    for (const p of this.procs) {
      if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
    }
    this.procs = [];
    for (const host of this.children) {
      try {
        execFileSync("ip", ["netns", "del", host], { stdio: "ignore" });
      } catch {
        // already gone
      }
    }
    try {
      execFileSync("ip", ["netns", "del", this.ns], { stdio: "ignore" });
    } catch {
      // already gone
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * The first serial port: output to a log file, and with an input socket, a unix socket
 * QEMU listens on (wait=off: the guest runs without anyone connected; the log still gets
 * every byte).
 */
function serialArgs(log: string, input?: string): string[] {
  if (!input) return ["-serial", `file:${log}`];
  return [
    "-chardev",
    `socket,id=serial0,path=${input},server=on,wait=off,logfile=${log}`,
    "-serial",
    "chardev:serial0",
  ];
}

function findOvmf(kind: "OVMF_CODE" | "OVMF_VARS"): string {
  for (const p of [
    `/usr/share/OVMF/${kind}.fd`,
    `/usr/share/OVMF/${kind}_4M.fd`,
    `/usr/share/ovmf/${kind}.fd`,
  ]) {
    if (existsSync(p)) return p;
  }
  throw new Error(`${kind}.fd not found: install the Debian package ovmf`);
}

/** A QEMU client whose serial console is polled for markers. */
export class FirmwareClient {
  private input?: Socket;
  private monitor?: Socket;

  constructor(
    readonly proc: ChildProcess,
    readonly serialPath: string,
    readonly inputPath?: string,
    readonly monitorPath?: string,
  ) {}

  /** Presses a key on the PC's keyboard through the QEMU monitor ("down", "ret"). */
  async sendKey(key: string): Promise<void> {
    if (!this.monitorPath) throw new Error("this client was started without a monitor");
    if (!/^[a-z0-9_-]+$/.test(key)) throw new Error(`not a QEMU key name: ${key}`);
    this.monitor ??= await connected(this.monitorPath);
    const sock = this.monitor;
    await new Promise<void>((resolve, reject) =>
      sock.write(`sendkey ${key}\n`, (err) => (err ? reject(err) : resolve())),
    );
  }

  /**
   * Types text on the serial console (as keys: "\r" is Enter). Needs serialInput. The
   * connection stays open and what QEMU sends on it is read and dropped (the log file has
   * it), so the guest never blocks on a full socket.
   */
  async type(text: string): Promise<void> {
    if (!this.inputPath) throw new Error("this client was started without serialInput");
    if (!this.input || this.input.destroyed) {
      const sock = createConnection(this.inputPath);
      await new Promise<void>((resolve, reject) => {
        sock.once("connect", resolve);
        sock.once("error", reject);
      });
      sock.on("data", () => {});
      sock.on("error", () => {});
      this.input = sock;
    }
    const sock = this.input;
    await new Promise<void>((resolve, reject) =>
      sock.write(text, (err) => (err ? reject(err) : resolve())),
    );
  }

  serial(): string {
    try {
      // Firmware writes ANSI escapes and CRs; markers are matched on plain text.
      return readFileSync(this.serialPath, "latin1").replace(
        new RegExp(`${String.fromCharCode(27)}\\[[0-9;?]*[A-Za-z]`, "g"),
        "",
      );
    } catch {
      return "";
    }
  }

  /**
   * Polls the serial log until the pattern appears. On time-out (or QEMU's exit) it
   * rejects with the whole serial log, so a failed boot shows where it stopped.
   */
  async waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.serial().match(pattern);
      if (m) return m;
      if (Date.now() > deadline || this.proc.exitCode !== null) {
        const why =
          this.proc.exitCode !== null
            ? `QEMU exited (${this.proc.exitCode})`
            : `${timeoutMs} ms passed`;
        throw new Error(
          `${pattern} not seen on the serial console: ${why}. Serial log:\n${this.serial()}`,
        );
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  kill(): void {
    this.input?.destroy();
    this.monitor?.destroy();
    if (this.proc.exitCode === null) this.proc.kill("SIGKILL");
  }
}

/** A connection to a QEMU unix socket; what QEMU answers is read and dropped. */
async function connected(path: string): Promise<Socket> {
  const sock = createConnection(path);
  await new Promise<void>((resolve, reject) => {
    sock.once("connect", resolve);
    sock.once("error", reject);
  });
  sock.on("data", () => {});
  sock.on("error", () => {});
  return sock;
}
