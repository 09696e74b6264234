// Runs Debian's iPXE (ipxe.lkrn) in QEMU with a script given as initrd, and watches the
// serial console. Used by the tests that prove rendered scripts on real iPXE.

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const IPXE_LKRN = "/usr/lib/ipxe/ipxe.lkrn";
export const QEMU = "/usr/bin/qemu-system-x86_64";

/** Why these tests cannot run here, or false. CI (root) must have the packages: fail there. */
export function qemuSkipReason(): string | false {
  if (existsSync(IPXE_LKRN) && existsSync(QEMU)) return false;
  if (process.getuid?.() === 0) return false;
  return "needs qemu-system-x86 and ipxe (Debian packages)";
}

export interface IpxeRun {
  /** Serial output with CR and ANSI control sequences removed. */
  serial: string;
  /** Serial output as written. */
  raw: string;
  /** QEMU ended by itself (the script ran "reboot", and QEMU runs with -no-reboot). */
  exited: boolean;
  /** The `until` pattern was seen. */
  matched: boolean;
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

export interface IpxeOptions {
  /** The iPXE script handed over as initrd. */
  script: string;
  /** Stop when the serial output matches this. */
  until: RegExp;
  timeoutMs: number;
  /** Raw disk image attached as the first IDE hard disk (BIOS drive 0x80). */
  disk?: string;
  /** Guest forwards: 10.0.2.100:<guestPort> reaches 127.0.0.1:<hostPort> on this host. */
  forwards?: { guestPort: number; hostPort: number }[];
}

export function cleanSerial(raw: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping terminal control sequences
  return raw.replace(/\r/g, "").replace(/\u001b\[[0-9;?]*[A-Za-z]/g, "");
}

/** Boots iPXE with `script`; every process and file it makes is gone after teardown. */
export async function runIpxe(t: Teardown, opts: IpxeOptions): Promise<IpxeRun> {
  const dir = await mkdtemp(join(tmpdir(), `bf-script-${process.pid}-`));
  let child: ChildProcess | undefined;
  t.teardown(async () => {
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
    }
    await rm(dir, { recursive: true, force: true });
  });

  const scriptFile = join(dir, "script.ipxe");
  const serialFile = join(dir, "serial.log");
  await writeFile(scriptFile, opts.script);
  await writeFile(serialFile, "");

  const args = [
    "-machine",
    "accel=tcg,graphics=off",
    "-m",
    "256",
    "-display",
    "none",
    "-no-reboot",
    "-kernel",
    IPXE_LKRN,
    "-initrd",
    scriptFile,
    "-serial",
    `file:${serialFile}`,
    "-monitor",
    "none",
  ];
  if (opts.forwards && opts.forwards.length > 0) {
    // restrict=on: the guest reaches nothing but the forwards to this host's loopback.
    const fwd = opts.forwards
      .map((f) => `guestfwd=tcp:10.0.2.100:${f.guestPort}-tcp:127.0.0.1:${f.hostPort}`)
      .join(",");
    args.push("-netdev", `user,id=n0,restrict=on,${fwd}`, "-device", "e1000,netdev=n0,romfile=");
  } else {
    args.push("-nic", "none");
  }
  if (opts.disk) args.push("-drive", `file=${opts.disk},format=raw,if=ide,index=0`);

  const proc = spawn(QEMU, args, { stdio: ["ignore", "ignore", "pipe"] });
  child = proc;
  let stderr = "";
  proc.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));

  const deadline = Date.now() + opts.timeoutMs;
  let raw = "";
  let matched = false;
  let ended = false;
  while (Date.now() < deadline) {
    raw = await readFile(serialFile, "utf8");
    if (opts.until.test(cleanSerial(raw))) {
      matched = true;
      break;
    }
    if (proc.exitCode !== null || proc.signalCode !== null) {
      ended = true;
      break;
    }
    await Promise.race([exited, new Promise((r) => setTimeout(r, 250))]);
  }
  // Give QEMU a moment to flush the serial file after the marker or exit.
  await new Promise((r) => setTimeout(r, 300));
  raw = await readFile(serialFile, "utf8");
  ended ||= proc.exitCode !== null || proc.signalCode !== null;
  if (!ended) proc.kill("SIGKILL");
  if (stderr.trim() !== "" && !matched) raw += `\n[qemu stderr] ${stderr}`;
  return { serial: cleanSerial(raw), raw, exited: ended, matched };
}
