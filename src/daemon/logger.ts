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
  return pino(
    { level: opts.level, redact, base: { service: "bootfleetd" } },
    opts.destination ?? pino.destination({ fd: 1, sync: true }),
  );
}
