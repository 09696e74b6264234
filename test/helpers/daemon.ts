import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";

export const REPO = resolve(import.meta.dirname, "../..");
export const DAEMON_BIN = join(REPO, "bin/bootfleetd.js");

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

export interface RunningDaemon {
  proc: ChildProcess;
  /** Every JSON log line so far. */
  logs: LogLine[];
  /** Raw stdout and stderr text, for failure messages and "no stack trace" checks. */
  output(): string;
  /** Resolves with the first log line (past or future) that matches, or rejects after timeoutMs. */
  waitForLog(match: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** Resolves with the exit code (or signal name) once the process has ended. */
  exited: Promise<number | string>;
  /** The HTTP port from the "HTTP listening" line (after ready). */
  port?: number;
}

export interface StartOptions {
  env?: Record<string, string>;
  args?: string[];
  /** Prefix command, e.g. ["ip", "netns", "exec", NS] or a setpriv invocation. */
  wrapper?: string[];
  /** Wait for "bootfleetd ready" (default true). */
  waitReady?: boolean;
  timeoutMs?: number;
}

let daemonCount = 0;

/** A temporary data_dir, removed in teardown. */
export function tempDir(t: { teardown(fn: () => void): void }, prefix = "bf-test-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  // Retried: a file the code under test still writes behind (a config file after an apply)
  // can appear in the folder while it is being removed (ENOTEMPTY).
  t.teardown(() => rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 }));
  return dir;
}

/**
 * Starts the built daemon (run `npm run build` first; `npm test` does) as a child
 * process, and kills it in teardown if the test did not stop it.
 */
export async function startDaemon(
  t: { teardown(fn: () => void | Promise<void>): void },
  opts: StartOptions = {},
): Promise<RunningDaemon> {
  const cmd = [...(opts.wrapper ?? []), process.execPath, DAEMON_BIN, ...(opts.args ?? [])];
  const proc = spawn(cmd[0]!, cmd.slice(1), {
    cwd: REPO,
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      BOOTFLEET_DHCP_ENABLED: "false",
      BOOTFLEET_TFTP_PORT: "0",
      BOOTFLEET_HTTP_LISTEN: "127.0.0.1:0",
      // Never the system's /run/bootfleet/api.sock, even as root.
      BOOTFLEET_HTTP_SOCKET: join(tmpdir(), `bf-api-${process.pid}-${++daemonCount}.sock`),
      ...opts.env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: LogLine[] = [];
  let text = "";
  const waiters: { match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  createInterface({ input: proc.stdout! }).on("line", (line) => {
    text += `${line}\n`;
    let parsed: LogLine | undefined;
    try {
      parsed = JSON.parse(line) as LogLine;
    } catch {
      return;
    }
    logs.push(parsed);
    for (const w of [...waiters]) {
      if (w.match(parsed)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(parsed);
      }
    }
  });
  proc.stderr!.on("data", (d: Buffer) => {
    text += d.toString();
  });
  const exited = new Promise<number | string>((res) =>
    proc.once("exit", (code, signal) => res(code ?? signal ?? "unknown")),
  );
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill("SIGKILL");
      await exited;
    }
  });

  const daemon: RunningDaemon = {
    proc,
    logs,
    exited,
    output: () => text,
    waitForLog: (match, timeoutMs = 60_000) => {
      const seen = logs.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise<LogLine>((res, rej) => {
        const timer = setTimeout(() => {
          rej(
            new Error(`timed out after ${timeoutMs} ms waiting for a log line; output:\n${text}`),
          );
        }, timeoutMs);
        const w = {
          match,
          resolve: (l: LogLine) => {
            clearTimeout(timer);
            res(l);
          },
        };
        waiters.push(w);
        void exited.then(() => {
          if (waiters.includes(w)) {
            clearTimeout(timer);
            rej(new Error(`daemon exited before the expected log line; output:\n${text}`));
          }
        });
      });
    },
  };
  if (opts.waitReady !== false) {
    const listening = await daemon.waitForLog((l) => l.msg === "HTTP listening", opts.timeoutMs);
    daemon.port = listening.port as number;
    await daemon.waitForLog((l) => l.msg === "bootfleetd ready", opts.timeoutMs);
  }
  return daemon;
}

/** One HTTP request from this process, bounded in time. */
export async function httpGet(
  url: string,
  timeoutMs = 5000,
): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, body: await res.text() };
}

/** The initial admin's access token from a daemon on loopback (its data folder holds the password). */
export async function adminToken(d: RunningDaemon, dataDir: string): Promise<string> {
  const password = readFileSync(join(dataDir, "initial-admin-password"), "utf8").trim();
  const r = await fetch(`http://127.0.0.1:${d.port}/api/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: "admin", password }),
  });
  if (r.status !== 200) throw new Error(`admin login failed: HTTP ${r.status}`);
  return ((await r.json()) as { access_token: string }).access_token;
}
