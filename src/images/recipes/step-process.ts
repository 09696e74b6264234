import { spawn } from "node:child_process";

/**
 * One step script as a process. Not src/host/exec.ts's runner, which keeps output for the
 * caller and ends only its own child: a step (mmdebstrap, a chroot, losetup) starts
 * processes of its own, so it runs as the leader of a new process group and cancel ends
 * the whole group; and its output is a log read line by line while it runs, for as long
 * as it runs. Like exec.ts it uses no shell to start and hands the step only the
 * environment it is given (no secret of the daemon's reaches it; nothing is on its
 * command line but the script's path).
 */

export type StepStream = "stdout" | "stderr";

export interface StepProcessOptions {
  /** The script, run with sh. */
  script: string;
  cwd: string;
  /** The step's whole environment besides PATH, LC_ALL and DEBIAN_FRONTEND. */
  env: Record<string, string>;
  signal?: AbortSignal;
  /** After an abort: SIGTERM to the group, then SIGKILL this much later. */
  killGraceMs?: number;
  /** "PROGRESS <percent> <text>" on stdout. */
  onProgress?: (percent: number, text: string) => void;
  /** Every other line, of stdout or stderr, as it comes. */
  onLine?: (stream: StepStream, line: string) => void;
}

export interface StepOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The abort signal fired while the step ran. */
  cancelled: boolean;
  /** The last lines of output, for the error that names a failed step. */
  tail: string[];
}

const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/** A line longer than this is cut (a progress bar without newlines must not fill memory). */
const MAX_LINE = 4096;
const TAIL_LINES = 20;

export function runStepProcess(opts: StepProcessOptions): Promise<StepOutcome> {
  return new Promise((resolve, reject) => {
    const tail: string[] = [];
    if (opts.signal?.aborted) {
      resolve({ code: null, signal: null, cancelled: true, tail });
      return;
    }
    // setpriv --pdeathsig: the step's shell gets SIGTERM if the daemon dies under it.
    const child = spawn("setpriv", ["--pdeathsig", "TERM", "--", "sh", opts.script], {
      cwd: opts.cwd,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      env: { PATH, LC_ALL: "C.UTF-8", DEBIAN_FRONTEND: "noninteractive", ...opts.env },
    });
    let cancelled = false;
    let graceTimer: NodeJS.Timeout | undefined;
    const killGroup = (sig: NodeJS.Signals) => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, sig);
      } catch {
        // ESRCH: the group is gone already.
      }
    };
    const onAbort = () => {
      cancelled = true;
      killGroup("SIGTERM");
      graceTimer = setTimeout(() => killGroup("SIGKILL"), opts.killGraceMs ?? 5000);
      graceTimer.unref();
    };
    opts.signal?.addEventListener("abort", onAbort, { once: true });

    const keep = (line: string) => {
      tail.push(line);
      if (tail.length > TAIL_LINES) tail.shift();
    };
    const lines = (stream: StepStream) => {
      let pending = "";
      return {
        data: (s: string) => {
          pending += s;
          const parts = pending.split("\n");
          pending = parts.pop() ?? "";
          if (pending.length > MAX_LINE) {
            parts.push(pending);
            pending = "";
          }
          for (const raw of parts) emit(stream, raw);
        },
        end: () => {
          if (pending) emit(stream, pending);
          pending = "";
        },
      };
    };
    const emit = (stream: StepStream, raw: string) => {
      const line = raw.replace(/\r$/, "").slice(0, MAX_LINE);
      const m = stream === "stdout" ? /^PROGRESS (\d{1,3}) ?(.*)$/.exec(line) : null;
      if (m) {
        opts.onProgress?.(Math.min(100, Number(m[1])), m[2] ?? "");
        return;
      }
      keep(line);
      opts.onLine?.(stream, line);
    };
    const out = lines("stdout");
    const err = lines("stderr");
    child.stdout.setEncoding("utf8").on("data", out.data);
    child.stderr.setEncoding("utf8").on("data", err.data);

    child.once("error", (e) => {
      opts.signal?.removeEventListener("abort", onAbort);
      reject(e);
    });
    // Nothing of a step outlives it: what it left running in its group is ended, so the
    // pipes close and the next step starts alone.
    child.once("exit", () => killGroup("SIGKILL"));
    child.once("close", (code, signal) => {
      opts.signal?.removeEventListener("abort", onAbort);
      if (graceTimer) clearTimeout(graceTimer);
      out.end();
      err.end();
      resolve({ code, signal, cancelled, tail });
    });
  });
}
