import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, truncateSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Test } from "tap";
import { AgentError, GuestAgent, sleep } from "./agent.js";
import { BUILD_TIMEOUT_MS, ensureGuestImage, type GuestImage } from "./image.js";

/**
 * A Debian 12 guest in QEMU, for proving what this machine's kernel cannot run (LIO,
 * device-mapper): its own kernel, a qcow2 overlay of the cached image (so the cache stays
 * pristine and a reboot keeps the run's state), extra virtio disks, the host's shareDir
 * over 9p at /host, port 80 forwarded to guest.httpBase, and every command through the
 * QEMU guest agent. See README.md in this folder.
 */

/** Power-on to ready took ~40 s under TCG here; a loaded CI machine gets headroom. */
export const BOOT_TIMEOUT_MS = 300_000;
/**
 * The per-file timeout a guest test file should set (`t.setTimeout(GUEST_FILE_TIMEOUT_MS)`):
 * tap's 300 s default does not cover a cold image build plus a boot plus a reboot.
 */
export const GUEST_FILE_TIMEOUT_MS = BUILD_TIMEOUT_MS + 3 * BOOT_TIMEOUT_MS;

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A command that exited non-zero (Guest.sh), with everything it said. */
export class GuestExecError extends Error implements ExecResult {
  constructor(
    message: string,
    readonly code: number,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(message);
    this.name = "GuestExecError";
  }
}

/**
 * An extra virtio disk: a new sparse file in the run folder; an existing raw file the
 * guest may read but never write (e.g. a built disk image to import inside the guest, which
 * costs no copy over the user-mode network); or an existing raw file of the test's that the
 * guest writes (e.g. a file system the test filled on the host, and reads on the host after
 * the guest stopped). The guest also finds disk i at /dev/disk/by-id/virtio-bf-extra-<i>.
 */
export type ExtraDisk = { sizeMiB: number } | { readOnlyFile: string } | { file: string };

/**
 * A second NIC on a tap device of a test LAN (test/helpers/lan.ts), for a guest that serves
 * PCs on that LAN. A tap is opened by name in its own network namespace, so QEMU then runs
 * inside that namespace: its port forward (guest.httpBase) listens on the namespace's
 * loopback, not the host's, and the test reaches the guest's HTTP there (or at the guest's
 * LAN address).
 */
export interface GuestLanNic {
  netns: string;
  tap: string;
  mac: string;
}

export interface BootOptions {
  /** More virtio disks, in order: /dev/vdb, /dev/vdc, ... */
  extraDisks?: ExtraDisk[];
  /** A second NIC on a test LAN's tap (QEMU then runs in the LAN's namespace). */
  lanNic?: GuestLanNic;
  /** A host folder the guest sees at /host (9p, mount_tag "host"), read-write. */
  shareDir?: string;
  memoryMiB?: number;
  cpus?: number;
  /**
   * "tcg" by default (or $BOOTFLEET_GUEST_ACCEL). KVM is not used unless asked for: on
   * this kind of machine it misbehaves for some guests (TESTING.md), and CI hosts differ.
   */
  accel?: "tcg" | "kvm";
  bootTimeoutMs?: number;
  /** More kernel command-line arguments, after the harness's own. */
  kernelArgs?: string[];
  /** Progress lines (image build, boot); e.g. `(m) => t.comment(m)`. */
  log?: (msg: string) => void;
}

type TestLike = Pick<Test, "teardown">;

/**
 * Why a guest cannot run here, or false. Tests that need a guest skip only as a
 * non-root developer outside CI; as root, or with CI=true, they always run (and fail
 * loudly if QEMU or mmdebstrap is missing).
 */
export function guestSkipReason(): string | false {
  if (process.getuid?.() === 0 || process.env.CI === "true") return false;
  return "needs root: mmdebstrap --mode=root builds the Debian guest image (run as root or with CI=true)";
}

/**
 * Builds or finds the image, boots a guest and waits until it is ready; the guest is
 * stopped in t's teardown. The test that calls it skips with `{ skip: guestSkipReason() }`,
 * so the report names the reason once, on the test that did not run.
 */
export async function bootGuest(t: TestLike, opts: BootOptions = {}): Promise<Guest> {
  const image = await ensureGuestImage(opts.log ? { log: opts.log } : {});
  opts.log?.(
    `guest image ${image.hash} (${image.kernelRelease}) ${image.built ? "built" : "cached"} in ${image.seconds.toFixed(1)} s`,
  );
  const guest = await Guest.start(image, opts);
  t.teardown(() => guest.stop());
  await guest.waitReady(opts.bootTimeoutMs ?? BOOT_TIMEOUT_MS);
  guest.bootMs = Date.now() - guest.startedAt;
  opts.log?.(`guest ready in ${(guest.bootMs / 1000).toFixed(1)} s (${guest.accel})`);
  return guest;
}

/**
 * A guest test's steps: each a subtest; when one fails, the tail of bootfleetd's journal
 * (`journalTail`) and of the guest's serial console go with the report.
 */
export function guestSteps(t: Test, guest: Guest, journalTail: () => Promise<string>) {
  return (name: string, fn: (t: Test) => Promise<void>) =>
    t.test(name, async (st) => {
      // A step that throws (a wait that timed out) is not failed yet when `finally` runs:
      // tap records the rejection after. Without this, such a step reported no journal.
      let threw = false;
      try {
        await fn(st);
      } catch (err) {
        threw = true;
        throw err;
      } finally {
        if (threw || !st.passing()) {
          st.comment(`--- journalctl -u bootfleetd (tail) ---\n${await journalTail()}`);
          st.comment(`--- guest serial (tail) ---\n${guest.serialTail(40)}`);
        }
      }
    });
}

export class Guest {
  readonly httpBase: string;
  readonly serialLogPath: string;
  readonly startedAt = Date.now();
  /** Power-on to ready, set by bootGuest. */
  bootMs = 0;
  /** The last reboot's duration, from `systemctl reboot` to ready. */
  rebootMs = 0;
  /** `systemctl --failed` when the guest came up degraded, for diagnosis. */
  failedUnits = "";
  readonly #agent: GuestAgent;
  #stopping: Promise<void> | undefined;
  #jobs = 0;
  #qemuOutput = "";

  private constructor(
    readonly image: GuestImage,
    readonly dir: string,
    readonly accel: "tcg" | "kvm",
    readonly proc: ChildProcess,
    readonly port: number,
    readonly shareDir: string | undefined,
    agentSocket: string,
  ) {
    this.httpBase = `http://127.0.0.1:${port}`;
    this.serialLogPath = join(dir, "serial.log");
    this.#agent = new GuestAgent(agentSocket);
    const keep = (d: Buffer) => {
      this.#qemuOutput = (this.#qemuOutput + d.toString()).slice(-8192);
    };
    proc.stdout?.on("data", keep);
    proc.stderr?.on("data", keep);
  }

  /** Starts QEMU (not waiting for the guest). bootGuest is the usual way in. */
  static async start(image: GuestImage, opts: BootOptions): Promise<Guest> {
    const dir = mkdtempSync(join(tmpdir(), "bf-guest-"));
    try {
      const accel = opts.accel ?? (process.env.BOOTFLEET_GUEST_ACCEL === "kvm" ? "kvm" : "tcg");
      const overlay = join(dir, "run.qcow2");
      execFileSync("qemu-img", [
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        image.disk,
        overlay,
      ]);
      const port = await freePort();
      const sock = join(dir, "qga.sock");
      const q = (p: string) => p.replaceAll(",", ",,"); // QEMU's option syntax escapes commas
      const args = [
        "-nodefaults",
        "-no-user-config",
        "-machine",
        `q35,accel=${accel}`,
        "-smp",
        String(opts.cpus ?? 2),
        "-m",
        String(opts.memoryMiB ?? 1536),
        "-display",
        "none",
        "-serial",
        `file:${q(join(dir, "serial.log"))}`,
        "-kernel",
        image.kernel,
        "-initrd",
        image.initrd,
        "-append",
        ["root=/dev/vda rw console=ttyS0 mitigations=off", ...(opts.kernelArgs ?? [])].join(" "),
        "-drive",
        `if=none,id=root,file=${q(overlay)},format=qcow2,cache=unsafe,discard=unmap`,
        "-device",
        "virtio-blk-pci,drive=root,serial=bf-root",
      ];
      (opts.extraDisks ?? []).forEach((d, i) => {
        let drive: string;
        if ("readOnlyFile" in d) {
          drive = `file=${q(d.readOnlyFile)},format=raw,readonly=on`;
        } else if ("file" in d) {
          // Written through to the file: the test reads it on the host once QEMU has exited.
          drive = `file=${q(d.file)},format=raw,cache=writeback`;
        } else {
          const file = join(dir, `extra${i}.raw`);
          closeSync(openSync(file, "w"));
          truncateSync(file, d.sizeMiB * 1024 * 1024);
          drive = `file=${q(file)},format=raw,cache=unsafe,discard=unmap`;
        }
        args.push(
          "-drive",
          `if=none,id=extra${i},${drive}`,
          "-device",
          `virtio-blk-pci,drive=extra${i},serial=bf-extra-${i}`,
        );
      });
      if (opts.shareDir) {
        args.push(
          "-fsdev",
          `local,id=hostshare,path=${q(opts.shareDir)},security_model=none`,
          "-device",
          "virtio-9p-pci,fsdev=hostshare,mount_tag=host",
        );
      }
      args.push(
        "-netdev",
        `user,id=n0,hostfwd=tcp:127.0.0.1:${port}-:80`,
        // romfile= : the kernel is loaded directly, the NIC's iPXE ROM would only cost time.
        "-device",
        "virtio-net-pci,netdev=n0,romfile=",
        ...(opts.lanNic
          ? [
              "-netdev",
              `tap,id=n1,ifname=${opts.lanNic.tap},script=no,downscript=no`,
              "-device",
              `virtio-net-pci,netdev=n1,mac=${opts.lanNic.mac},romfile=`,
            ]
          : []),
        "-chardev",
        `socket,id=qga0,path=${q(sock)},server=on,wait=off`,
        "-device",
        "virtio-serial-pci,id=vser0",
        "-device",
        "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0",
        "-device",
        "virtio-rng-pci",
      );
      // setpriv --pdeathsig: if the test process is killed (tap's time-out), QEMU goes too.
      // `ip netns exec` execs QEMU in the same process (no fork), so the signal still reaches it.
      const netns = opts.lanNic ? ["ip", "netns", "exec", opts.lanNic.netns] : [];
      const proc = spawn(
        "setpriv",
        ["--pdeathsig", "KILL", "--", ...netns, "qemu-system-x86_64", ...args],
        { stdio: ["ignore", "pipe", "pipe"] },
      );
      return new Guest(image, dir, accel, proc, port, opts.shareDir, sock);
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /**
   * Runs argv in the guest (no shell) through guest-exec and polls guest-exec-status.
   * The command runs under coreutils' timeout, so one that hangs is killed in the guest
   * too, and this rejects. Note: the agent reports the exit only once the command's
   * stdout and stderr are closed, so start daemons detached (systemd-run, or redirect).
   */
  async exec(
    argv: string[],
    opts: { timeoutMs?: number; input?: string } = {},
  ): Promise<ExecResult> {
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const deadline = Date.now() + timeoutMs + 10_000;
    this.#assertRunning(`exec ${argv.join(" ")}`);
    const args: Record<string, unknown> = {
      path: "timeout",
      arg: ["-k", "5", `${Math.ceil(timeoutMs / 1000)}s`, ...argv],
      "capture-output": true,
    };
    if (opts.input !== undefined) args["input-data"] = Buffer.from(opts.input).toString("base64");
    const started = Date.now();
    const { pid } = await this.#command<{ pid: number }>("guest-exec", args, 10_000);
    for (let wait = 20; ; wait = Math.min(wait * 2, 250)) {
      const st = await this.#command<{
        exited: boolean;
        exitcode?: number;
        signal?: number;
        "out-data"?: string;
        "err-data"?: string;
      }>("guest-exec-status", { pid }, Math.max(1_000, Math.min(10_000, deadline - Date.now())));
      if (st.exited) {
        const result = {
          code: st.exitcode ?? 128 + (st.signal ?? 0),
          stdout: Buffer.from(st["out-data"] ?? "", "base64").toString("utf8"),
          stderr: Buffer.from(st["err-data"] ?? "", "base64").toString("utf8"),
        };
        // 124: timeout(1) ended it; 137: it ignored SIGTERM and got SIGKILL 5 s later.
        if ((result.code === 124 || result.code === 137) && Date.now() - started >= timeoutMs) {
          throw this.#fail(`guest command timed out after ${timeoutMs} ms: ${argv.join(" ")}`);
        }
        return result;
      }
      if (Date.now() > deadline) {
        throw this.#fail(`guest command gave no exit in ${timeoutMs} ms: ${argv.join(" ")}`);
      }
      await sleep(wait);
    }
  }

  /** `/bin/sh -c script`; returns stdout, throws GuestExecError when the exit is not 0. */
  async sh(script: string, opts: { timeoutMs?: number; input?: string } = {}): Promise<string> {
    const r = await this.exec(["/bin/sh", "-c", script], opts);
    if (r.code !== 0) {
      const shown = script.length > 200 ? `${script.slice(0, 200)}...` : script;
      throw new GuestExecError(
        `guest sh exited ${r.code}: ${shown}\n--- stderr:\n${r.stderr.slice(-2000)}\n--- stdout:\n${r.stdout.slice(-2000)}`,
        r.code,
        r.stdout,
        r.stderr,
      );
    }
    return r.stdout;
  }

  /**
   * Runs a heavy script (minutes of I/O: copying or hashing an image) as a transient
   * systemd unit and polls for its end: under TCG on a loaded host the guest agent may not
   * answer for a while during it, and a missed poll is only retried, where `sh` would
   * fail. Resolves with its output; rejects on a non-zero exit or after timeoutMs.
   */
  async job(script: string, timeoutMs: number): Promise<string> {
    const name = `bf-job-${process.pid}-${++this.#jobs}`;
    const tag = `/root/${name}`;
    // systemd expands $VAR and ${VAR} in a unit's command line (v252 in the guest): every $
    // is doubled, which systemd turns back into one, so the script's shell sees its own.
    const command = `(${script}) >${tag}.out 2>&1; echo $? >${tag}.rc`.replaceAll("$", "$$$$");
    await this.sh(`systemd-run --quiet --collect --unit=${name} /bin/sh -c ${shq(command)}`);
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < deadline) {
      await sleep(5000);
      try {
        const rc = await this.exec(["cat", `${tag}.rc`], { timeoutMs: 60_000 });
        if (rc.code !== 0) continue;
        const out = await this.sh(`cat ${tag}.out`);
        if (rc.stdout.trim() !== "0") {
          throw new GuestExecError(
            `guest job failed (${rc.stdout.trim()}): ${script}\n${out}`,
            Number(rc.stdout.trim()),
            out,
            "",
          );
        }
        return out;
      } catch (err) {
        if (err instanceof GuestExecError && err.message.startsWith("guest job failed")) throw err;
        last = err;
      }
    }
    throw this.#fail(`guest job did not end in ${timeoutMs} ms: ${script}\n${String(last)}`);
  }

  /**
   * Waits until the agent answers and systemd has finished starting (running or
   * degraded), then mounts the share at /host. Rejects with the serial tail on time-out
   * or when QEMU exits.
   */
  async waitReady(timeoutMs = BOOT_TIMEOUT_MS): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const left = () => deadline - Date.now();
    await this.#agent.connect(Math.min(left(), 10_000)).catch((err) => {
      throw this.#fail(`no guest agent socket: ${err.message}`);
    });
    for (;;) {
      this.#assertRunning("waiting for the guest agent");
      if (left() <= 0) throw this.#fail(`guest agent silent after ${timeoutMs} ms`);
      try {
        await this.#agent.sync(Math.min(2_000, Math.max(left(), 1)));
        break;
      } catch (err) {
        if (!(err instanceof AgentError)) throw err;
        await sleep(500);
      }
    }
    for (;;) {
      const r = await this.exec(["systemctl", "is-system-running", "--wait"], {
        timeoutMs: Math.max(left(), 1_000),
      });
      const state = r.stdout.trim();
      if (state === "running" || state === "degraded") {
        if (state === "degraded") {
          this.failedUnits = (await this.exec(["systemctl", "--failed", "--no-legend"])).stdout;
        }
        break;
      }
      if (left() <= 0) throw this.#fail(`guest is "${state}" after ${timeoutMs} ms`);
      await sleep(500);
    }
    if (this.shareDir) {
      await this.sh(
        "mountpoint -q /host || { modprobe 9pnet_virtio && mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 host /host; }",
        { timeoutMs: 30_000 },
      ).catch((err: Error) => {
        throw this.#fail(`mounting the 9p share at /host: ${err.message}`);
      });
    }
  }

  /**
   * Reboots the guest (systemctl reboot, same kernel, same qcow2 overlay) and waits
   * until a new boot (a different boot_id) is ready.
   */
  async reboot(timeoutMs = BOOT_TIMEOUT_MS): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const before = (await this.sh("cat /proc/sys/kernel/random/boot_id")).trim();
    const started = Date.now();
    // guest-exec answers with a pid at once; the status never comes, the agent goes down.
    await this.#command("guest-exec", { path: "systemctl", arg: ["reboot"] }, 10_000);
    this.#agent.invalidate();
    for (;;) {
      this.#assertRunning("waiting for the guest to reboot");
      if (Date.now() > deadline) {
        throw this.#fail(`guest did not come back from reboot in ${timeoutMs} ms`);
      }
      await sleep(1_000);
      try {
        await this.#agent.sync(2_000);
        const r = await this.exec(["cat", "/proc/sys/kernel/random/boot_id"], {
          timeoutMs: 5_000,
        });
        if (r.code === 0 && r.stdout.trim() && r.stdout.trim() !== before) break;
      } catch {
        // the old agent going down, or the new one not up yet
      }
    }
    await this.waitReady(Math.max(deadline - Date.now(), 1_000));
    this.rebootMs = Date.now() - started;
  }

  /** The end of the serial console (kernel and systemd messages), for failure messages. */
  serialTail(lines = 60): string {
    let text: string;
    try {
      text = readFileSync(this.serialLogPath, "utf8");
    } catch {
      return "(no serial log)";
    }
    const esc = String.fromCharCode(27);
    return text
      .replace(new RegExp(`${esc}\\[[0-9;?]*[A-Za-z]`, "g"), "")
      .replace(/\r/g, "")
      .split("\n")
      .slice(-lines)
      .join("\n");
  }

  /** Ends QEMU (SIGTERM, then SIGKILL) and removes the run folder. Safe to call twice. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#agent.close();
      if (this.running) {
        const exited = new Promise<void>((r) => this.proc.once("exit", () => r()));
        this.proc.kill("SIGTERM");
        const t = setTimeout(() => this.proc.kill("SIGKILL"), 5_000);
        await exited;
        clearTimeout(t);
      }
      if (process.env.BOOTFLEET_GUEST_KEEP === "1") {
        process.stderr.write(`guest run folder kept: ${this.dir}\n`);
      } else {
        rmSync(this.dir, { recursive: true, force: true });
      }
    })();
    return this.#stopping;
  }

  async #command<T>(execute: string, args: Record<string, unknown>, timeoutMs: number) {
    this.#assertRunning(execute);
    try {
      return await this.#agent.command<T>(execute, args, timeoutMs);
    } catch (err) {
      if (err instanceof AgentError) throw this.#fail(err.message);
      throw err;
    }
  }

  #assertRunning(doing: string): void {
    if (!this.running) {
      throw this.#fail(
        `QEMU exited (${this.proc.exitCode ?? this.proc.signalCode}) while ${doing}`,
      );
    }
  }

  /** An Error whose message ends with QEMU's own output and the serial console's tail. */
  #fail(message: string): Error {
    const qemu = this.#qemuOutput.trim();
    return new Error(
      `${message}${qemu ? `\n--- QEMU said:\n${qemu}` : ""}\n--- serial console (${this.serialLogPath}), last lines:\n${this.serialTail()}`,
    );
  }
}

/** Quotes one argument for the guest's /bin/sh. */
function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      s.close(() => (addr && typeof addr === "object" ? resolve(addr.port) : reject()));
    });
  });
}
