// The network namespaces of the benches that put a server and its clients on a LAN of their
// own (bench/dhcp, bench/storm): the pair of namespaces joined by a bridge, the servers
// started inside, and the teardown. Each bench adds what only it needs on top.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";

const ns = (name: string, ...a: string[]) =>
  execFileSync("ip", ["netns", "exec", name, ...a], { stdio: ["ignore", "pipe", "pipe"] });

export interface BridgedLan {
  /** The server's namespace: br0 holds `serverCidr`, `outer` is the veth end enslaved to it. */
  serverNs: string;
  /** The clients' namespace: `eth0` is the other veth end, up, with no address. */
  clientNs: string;
  /** Name of the server-side veth end (unique per run: the names share the host's limit). */
  outer: string;
  serverCidr: string;
}

/** Makes both namespaces, loopback up, IPv6 off, br0 in the server one, veth to eth0. */
export function makeBridgedLan(lan: BridgedLan): void {
  for (const name of [lan.serverNs, lan.clientNs]) {
    execFileSync("ip", ["netns", "add", name], { stdio: ["ignore", "pipe", "pipe"] });
  }
  for (const name of [lan.serverNs, lan.clientNs]) {
    // Router solicitations and MLD reports would only add noise on the capture sockets.
    ns(name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1");
    ns(name, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1");
    ns(name, "ip", "link", "set", "lo", "up");
  }
  const s = (...a: string[]) => ns(lan.serverNs, "ip", ...a);
  s("link", "add", "br0", "type", "bridge");
  s("addr", "add", lan.serverCidr, "dev", "br0");
  s("link", "set", "br0", "up");
  s("link", "add", lan.outer, "type", "veth", "peer", "name", "eth0", "netns", lan.clientNs);
  s("link", "set", lan.outer, "master", "br0");
  s("link", "set", lan.outer, "up");
  ns(lan.clientNs, "ip", "link", "set", "eth0", "up");
}

/** Deletes the namespaces (with every interface in them); one never made is no error. */
export function deleteNetns(...names: string[]): void {
  for (const name of names) {
    try {
      execFileSync("ip", ["netns", "del", name], { stdio: "ignore" });
    } catch {
      // never made, or already gone
    }
  }
}

export interface NsProcess {
  proc: ChildProcess;
  /** What it printed on stdout and stderr, the last 200,000 characters. */
  output(): string;
}

/**
 * Starts `cmd` in namespace `netns` with only PATH and `env` in its environment (the
 * caller's own variables must not change how a server behaves).
 */
export function spawnInNetns(
  netns: string,
  cmd: string,
  args: string[],
  env: Record<string, string>,
  cwd: string,
): NsProcess {
  const proc = spawn("ip", ["netns", "exec", netns, cmd, ...args], {
    cwd,
    env: { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let text = "";
  // Bounded: a server that logs for a whole storm must not fill this process's heap.
  const keep = (d: Buffer) => {
    text = (text + d.toString()).slice(-200_000);
  };
  proc.stdout?.on("data", keep);
  proc.stderr?.on("data", keep);
  return { proc, output: () => text };
}

/** Sends `signal`, waits up to `graceMs` for the exit, then SIGKILL and waits for that. */
export async function stopProcess(
  p: ChildProcess,
  graceMs: number,
  signal: NodeJS.Signals = "SIGTERM",
): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise<void>((res) => p.once("exit", () => res()));
  p.kill(signal);
  const timeout = new Promise<boolean>((res) => setTimeout(() => res(false), graceMs).unref());
  if (!(await Promise.race([exited.then(() => true), timeout]))) {
    p.kill("SIGKILL");
    await exited;
  }
}
