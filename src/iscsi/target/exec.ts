import { execFile } from "node:child_process";
import { redact } from "./validate.js";

export interface CommandResult {
  stdout: string;
  stderr: string;
}

/** Runs a program with an argument array (never a shell); how drivers reach tgtadm. */
export type CommandRunner = (file: string, args: readonly string[]) => Promise<CommandResult>;

export class CommandError extends Error {
  constructor(
    message: string,
    readonly code: number | string | null,
    readonly stderr: string,
  ) {
    super(message);
    this.name = "CommandError";
  }
}

/**
 * The default runner. `secrets` are scrubbed from the error text: tgtadm takes CHAP
 * passwords as arguments and Node puts the whole command line into its error message.
 */
export function execRunner(timeoutMs = 15_000): CommandRunner {
  return (file, args) =>
    new Promise((resolve, reject) => {
      execFile(
        file,
        [...args],
        { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, encoding: "utf8" },
        (err, stdout, stderr) => {
          if (err) {
            const e = err as NodeJS.ErrnoException & { code?: number | string };
            const said = (stderr || stdout || e.message).trim();
            reject(new CommandError(said, e.code ?? null, stderr));
            return;
          }
          resolve({ stdout, stderr });
        },
      );
    });
}

/** Describes a command for an error or log line, with every secret replaced. */
export function describeCommand(
  file: string,
  args: readonly string[],
  secrets: readonly string[],
): string {
  return redact([file, ...args].join(" "), secrets);
}
