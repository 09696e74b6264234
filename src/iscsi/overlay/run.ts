import { execFile } from "node:child_process";

export interface CommandResult {
  stdout: string;
  stderr: string;
}

/**
 * Runs one program with an argument array (never through a shell). Rejects with a
 * CommandError when the program cannot start or exits non-zero.
 */
export type CommandRunner = (file: string, args: readonly string[]) => Promise<CommandResult>;

export class CommandError extends Error {
  readonly file: string;
  readonly args: readonly string[];
  /** Exit status, or an errno string ("ENOENT" when the program is not installed). */
  readonly exitCode: number | string | null;
  readonly stdout: string;
  readonly stderr: string;

  constructor(
    file: string,
    args: readonly string[],
    exitCode: number | string | null,
    stdout: string,
    stderr: string,
    cause?: unknown,
  ) {
    const detail = stderr.trim() || (exitCode === null ? "killed" : `exit ${exitCode}`);
    super(`${file} ${args.join(" ")}: ${detail}`, cause === undefined ? undefined : { cause });
    this.name = "CommandError";
    this.file = file;
    this.args = args;
    this.exitCode = exitCode;
    this.stdout = stdout;
    this.stderr = stderr;
  }
}

export interface ExecRunnerOptions {
  /** Kills a command that hangs (an LVM lock, a stuck device); default 120 s. */
  timeoutMs?: number;
  /** Largest stdout kept; a fragmented 100 GB overlay's extent map is several MB. */
  maxBufferBytes?: number;
}

export function execFileRunner(options: ExecRunnerOptions = {}): CommandRunner {
  const timeout = options.timeoutMs ?? 120_000;
  const maxBuffer = options.maxBufferBytes ?? 256 * 1024 * 1024;
  return (file, args) =>
    new Promise((resolve, reject) => {
      execFile(
        file,
        [...args],
        { timeout, maxBuffer, encoding: "utf8", killSignal: "SIGKILL" },
        (err, stdout, stderr) => {
          if (err) {
            const code = (err as NodeJS.ErrnoException & { code?: unknown }).code;
            const exitCode = typeof code === "number" || typeof code === "string" ? code : null;
            reject(new CommandError(file, args, exitCode, stdout, stderr, err));
            return;
          }
          resolve({ stdout, stderr });
        },
      );
    });
}
