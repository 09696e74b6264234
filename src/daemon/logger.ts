import { type Logger, pino } from "pino";

export type LogLevel = "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";

/**
 * Field names that may carry a secret anywhere in a log object. pino replaces their
 * values before the line is written, so a careless `log.info({ target }, ...)` cannot
 * leak a CHAP password or a token into the journal.
 */
export const REDACTED_FIELDS = [
  "password",
  "chap_password",
  "chapPassword",
  "mutual_chap_password",
  "mutualPassword",
  "bmc_password",
  "secret",
  "token",
  "access_token",
  "refresh_token",
  "authorization",
  "cookie",
];

export interface LoggerOptions {
  level: LogLevel;
  /** Human-readable lines instead of JSON (a TTY, or --pretty). */
  pretty: boolean;
  /** Where lines go; stdout by default. Tests pass a stream to read them back. */
  destination?: NodeJS.WritableStream;
}

export function createLogger(opts: LoggerOptions): Logger {
  const redact = {
    paths: REDACTED_FIELDS.flatMap((f) => [f, `*.${f}`, `*.*.${f}`]),
    censor: "[redacted]",
  };
  if (opts.pretty) {
    return pino({
      level: opts.level,
      redact,
      transport: { target: "pino-pretty", options: { colorize: true, destination: 1 } },
    });
  }
  // Written behind the event loop, not in it: a synchronous write per line stalls every
  // DHCP, TFTP and script answer whenever the journal (or whatever reads stdout) is slow,
  // and in a 100-PC boot storm those writes were 7 % of the daemon's busy time. One write
  // is in flight at a time and lines logged meanwhile go out with the next; an exit
  // (process.exit after a stop or a fatal error) writes what is left synchronously
  // (pino's exit hook), so only a SIGKILL can lose the last lines.
  return pino(
    { level: opts.level, redact, base: { service: "bootfleetd" } },
    opts.destination ?? pino.destination({ fd: 1, sync: false }),
  );
}
