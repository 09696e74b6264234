import { spawn } from "node:child_process";

/**
 * The one way bootfleet runs another program (tgtadm, lvm, xfs_io, modprobe, ipmitool,
 * qemu-img): never through a shell, with a bounded run time and bounded captured output,
 * and with every secret the caller names scrubbed from what an error or a log line says.
 */

export interface RunOptions {
  /**
   * The child's whole environment. By default it gets only PATH: nothing the daemon
   * was started with (a token in its environment) leaks into tools it runs.
   */
  env?: NodeJS.ProcessEnv;
  /** Ends a command that hangs (an LVM lock, a BMC that never answers). None by default. */
  timeoutMs?: number;
  /** After a timeout or an abort: SIGTERM, then SIGKILL this much later (0: SIGKILL at once). */
  killGraceMs?: number;
  /** Aborting it ends the process the same way as the timeout. */
  signal?: AbortSignal;
  /** Written to the child's stdin, which is then closed; without it stdin is empty. */
  stdin?: string;
  /** Each chunk of stdout as it arrives (progress output). */
  onStdout?: (chunk: string) => void;
  /**
   * At most this many characters of stdout and of stderr are kept (default 1 Mi); more
   * makes the result `truncated`, which a checked run treats as a failure rather than
   * parse half a report.
   */
  maxOutputChars?: number;
  /** Strings (CHAP or BMC passwords) replaced by REDACTED in a CommandError. */
  secrets?: readonly string[];
}

export interface ProcessResult {
  /** Exit status; null when ended by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Set when bootfleet ended the process: its abort signal fired, or it timed out. */
  killed: "aborted" | "timeout" | undefined;
  /** More output came than `maxOutputChars`: stdout or stderr is cut short. */
  truncated: boolean;
}

export interface CommandResult {
  stdout: string;
  stderr: string;
}

/**
 * Runs one program and resolves with its output; rejects with a CommandError when it
 * cannot start, exits non-zero, is killed or says too much. Drivers take one of these so
 * a unit test can hand in a recording fake.
 */
export type CommandRunner = (
  file: string,
  args: readonly string[],
  opts?: RunOptions,
) => Promise<CommandResult>;

export const REDACTED = "<redacted>";

/** The one redaction rule: every occurrence of every non-empty secret becomes REDACTED. */
export function redact(text: string, secrets: readonly string[] = []): string {
  let out = text;
  for (const s of secrets) if (s.length > 0) out = out.split(s).join(REDACTED);
  return out;
}

/** A command line for an error or log line, with every secret replaced. */
export function describeCommand(
  file: string,
  args: readonly string[],
  secrets: readonly string[] = [],
): string {
  return redact([file, ...args].join(" "), secrets);
}

/** A command that failed. Its message, args, stdout and stderr hold no named secret. */
export class CommandError extends Error {
  override name = "CommandError";
  readonly file: string;
  readonly args: readonly string[];
  /** Exit status, or an errno string ("ENOENT" when the program is not installed). */
  readonly exitCode: number | string | null;
  readonly signal: NodeJS.Signals | null;
  readonly killed: ProcessResult["killed"];
  readonly stdout: string;
  readonly stderr: string;
  /** Why, without the command line: the end of stderr, or how it ended. */
  readonly detail: string;

  constructor(
    file: string,
    args: readonly string[],
    outcome: Partial<ProcessResult> & { errno?: string },
    options: { secrets?: readonly string[]; cause?: unknown } = {},
  ) {
    const secrets = options.secrets ?? [];
    const stderr = redact(outcome.stderr ?? "", secrets);
    const how = howItEnded(outcome);
    const tail = lastLines(stderr);
    const detail = tail || how;
    super(
      `${describeCommand(file, args, secrets)} ${how}${tail ? `: ${tail}` : ""}`,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.file = file;
    this.args = args.map((a) => redact(a, secrets));
    this.exitCode = outcome.errno ?? outcome.code ?? null;
    this.signal = outcome.signal ?? null;
    this.killed = outcome.killed;
    this.stdout = redact(outcome.stdout ?? "", secrets);
    this.stderr = stderr;
    this.detail = detail;
  }
}

function howItEnded(o: Partial<ProcessResult> & { errno?: string }): string {
  if (o.errno === "ENOENT") return "is not installed (ENOENT)";
  if (o.errno) return `could not start (${o.errno})`;
  if (o.killed === "aborted") return "was cancelled";
  if (o.killed === "timeout") return "timed out";
  if (o.signal) return `was killed by ${o.signal}`;
  if (o.code !== 0 && o.code !== undefined) return `exited with code ${o.code}`;
  if (o.truncated) return "printed more output than is kept";
  return "failed";
}

function lastLines(s: string): string {
  return s.trim().split("\n").slice(-3).join(" / ").slice(0, 1000);
}

const DEFAULT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * Runs a command and resolves with its outcome whatever the exit code: for callers that
 * read meaning into exit codes (qemu-img check's 3 and 63). Rejects with a CommandError
 * only when the program cannot start.
 */
export function runProcess(
  file: string,
  args: readonly string[],
  opts: RunOptions = {},
): Promise<ProcessResult> {
  const max = opts.maxOutputChars ?? 1024 * 1024;
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) {
      resolve({
        code: null,
        signal: null,
        stdout: "",
        stderr: "",
        killed: "aborted",
        truncated: false,
      });
      return;
    }
    const child = spawn(file, [...args], {
      env: opts.env ?? { PATH: process.env.PATH || DEFAULT_PATH },
      stdio: "pipe",
    });
    let stdout = "";
    let stderr = "";
    let truncated = false;
    let killed: ProcessResult["killed"];
    let graceTimer: NodeJS.Timeout | undefined;
    const kill = (why: "aborted" | "timeout") => {
      if (killed || child.exitCode !== null || child.signalCode !== null) return;
      killed = why;
      const grace = opts.killGraceMs ?? 5000;
      if (grace <= 0) {
        child.kill("SIGKILL");
        return;
      }
      child.kill("SIGTERM");
      graceTimer = setTimeout(() => child.kill("SIGKILL"), grace);
      graceTimer.unref();
    };
    const onAbort = () => kill("aborted");
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    const timeout = opts.timeoutMs ? setTimeout(() => kill("timeout"), opts.timeoutMs) : undefined;

    // A child that exits without reading its input must not crash the daemon (EPIPE).
    child.stdin.on("error", () => {});
    child.stdin.end(opts.stdin);
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stdout.on("data", (s: string) => {
      if (stdout.length + s.length > max) truncated = true;
      if (stdout.length < max) stdout += s.slice(0, max - stdout.length);
      opts.onStdout?.(s);
    });
    child.stderr.on("data", (s: string) => {
      if (stderr.length + s.length > max) truncated = true;
      if (stderr.length < max) stderr += s.slice(0, max - stderr.length);
    });
    child.once("error", (err: NodeJS.ErrnoException) => {
      cleanup();
      reject(
        new CommandError(
          file,
          args,
          { errno: err.code ?? "EIO" },
          {
            ...(opts.secrets ? { secrets: opts.secrets } : {}),
            cause: err,
          },
        ),
      );
    });
    child.once("close", (code, signal) => {
      cleanup();
      resolve({ code, signal, stdout, stderr, killed, truncated });
    });
    function cleanup() {
      opts.signal?.removeEventListener("abort", onAbort);
      if (timeout) clearTimeout(timeout);
      if (graceTimer) clearTimeout(graceTimer);
    }
  });
}

/** runProcess, but anything other than a clean exit 0 becomes a CommandError. */
export async function runChecked(
  file: string,
  args: readonly string[],
  opts: RunOptions = {},
): Promise<ProcessResult> {
  const r = await runProcess(file, args, opts);
  if (r.code !== 0 || r.killed || r.truncated) {
    throw new CommandError(file, args, r, opts.secrets ? { secrets: opts.secrets } : {});
  }
  return r;
}

/** A CommandRunner with defaults (a timeout, an output limit) that each call may override. */
export function commandRunner(defaults: RunOptions = {}): CommandRunner {
  return async (file, args, opts) => {
    const r = await runChecked(file, args, { ...defaults, ...opts });
    return { stdout: r.stdout, stderr: r.stderr };
  };
}
