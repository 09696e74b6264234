import { spawn } from "node:child_process";

export interface RunProcessOptions {
  /** Aborting it ends the process: SIGTERM, then SIGKILL after `killGraceMs`. */
  signal?: AbortSignal;
  /** The child's whole environment (nothing is inherited unless the caller passes it). */
  env?: NodeJS.ProcessEnv;
  /** Called with each chunk of stdout as it arrives (progress output). */
  onStdout?: (chunk: string) => void;
  timeoutMs?: number;
  killGraceMs?: number;
  /** At most this much of stdout and stderr is kept for the result. */
  maxCaptureBytes?: number;
}

export interface ProcessResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when the process was ended because of the abort signal or the timeout. */
  killed: "aborted" | "timeout" | undefined;
}

/** A process that exited other than with 0, with its stderr for the job log and error. */
export class ProcessError extends Error {
  override name = "ProcessError";
  constructor(
    readonly command: string,
    readonly result: ProcessResult,
  ) {
    const why = result.killed
      ? result.killed === "aborted"
        ? "was cancelled"
        : "timed out"
      : result.signal
        ? `was killed by ${result.signal}`
        : `exited with code ${result.code}`;
    const detail = result.stderr.trim().split("\n").slice(-3).join(" / ");
    super(`${command} ${why}${detail ? `: ${detail}` : ""}`);
  }
}

/**
 * Runs a command without a shell (arguments are never parsed by one) and resolves with its
 * outcome, whatever the exit code. Output is bounded so a chatty tool cannot grow memory.
 */
export function runProcess(
  command: string,
  args: readonly string[],
  opts: RunProcessOptions = {},
): Promise<ProcessResult> {
  const max = opts.maxCaptureBytes ?? 1 << 20;
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) {
      resolve({ code: null, signal: null, stdout: "", stderr: "", killed: "aborted" });
      return;
    }
    const child = spawn(command, args, {
      env: opts.env ?? { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    let killed: ProcessResult["killed"];
    let graceTimer: NodeJS.Timeout | undefined;
    const kill = (why: "aborted" | "timeout") => {
      if (killed || child.exitCode !== null) return;
      killed = why;
      child.kill("SIGTERM");
      graceTimer = setTimeout(() => child.kill("SIGKILL"), opts.killGraceMs ?? 5000);
      graceTimer.unref();
    };
    const onAbort = () => kill("aborted");
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    const timeout = opts.timeoutMs ? setTimeout(() => kill("timeout"), opts.timeoutMs) : undefined;

    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stdout.on("data", (s: string) => {
      if (stdout.length < max) stdout += s.slice(0, max - stdout.length);
      opts.onStdout?.(s);
    });
    child.stderr.on("data", (s: string) => {
      if (stderr.length < max) stderr += s.slice(0, max - stderr.length);
    });
    child.once("error", (err) => {
      cleanup();
      reject(err);
    });
    child.once("close", (code, signal) => {
      cleanup();
      resolve({ code, signal, stdout, stderr, killed });
    });
    function cleanup() {
      opts.signal?.removeEventListener("abort", onAbort);
      if (timeout) clearTimeout(timeout);
      if (graceTimer) clearTimeout(graceTimer);
    }
  });
}

/** runProcess, but a non-zero exit (or a kill) becomes a ProcessError. */
export async function runChecked(
  command: string,
  args: readonly string[],
  opts: RunProcessOptions = {},
): Promise<ProcessResult> {
  const r = await runProcess(command, args, opts);
  if (r.code !== 0 || r.killed) throw new ProcessError(command, r);
  return r;
}
