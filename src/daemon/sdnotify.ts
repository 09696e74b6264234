import { createRequire } from "node:module";
import type { Logger } from "pino";

/**
 * systemd's notification protocol (sd_notify(3)): datagrams such as "READY=1" sent to
 * the AF_UNIX SOCK_DGRAM socket named by $NOTIFY_SOCKET. Node has no unix datagram
 * sockets, and `systemd-notify` run as a child is racy (systemd may not attribute the
 * message to the service once the short-lived helper has exited), so we send from our
 * own process through the small native addon `unix-dgram`.
 */
export interface Notifier {
  /** True when there is a socket to talk to (running under systemd with Type=notify). */
  readonly enabled: boolean;
  ready(status: string): void;
  status(status: string): void;
  stopping(status: string): void;
  reloading(): void;
  watchdog(): void;
  /** The watchdog period systemd asked for, halved as sd_watchdog_enabled(3) advises; undefined when off. */
  readonly watchdogIntervalMs: number | undefined;
  close(): void;
}

interface UnixDgramSocket {
  send(buf: Buffer, offset: number, length: number, path: string, cb?: (err?: Error) => void): void;
  on(event: "error", cb: (err: Error) => void): void;
  close(): void;
}

const require = createRequire(import.meta.url);

export function createNotifier(
  env: Record<string, string | undefined>,
  log: Logger,
  pid: number = process.pid,
): Notifier {
  const path = env.NOTIFY_SOCKET;
  const watchdogIntervalMs = watchdogInterval(env, pid);
  let socket: UnixDgramSocket | undefined;
  if (path?.startsWith("@")) {
    // The addon copies the path with strncpy, which cannot express the leading NUL of
    // an abstract socket name. systemd itself uses /run/systemd/notify.
    log.warn(
      { notify_socket: path },
      "abstract NOTIFY_SOCKET is not supported; no systemd notifications",
    );
  } else if (path) {
    const dgram = require("unix-dgram") as { createSocket(type: "unix_dgram"): UnixDgramSocket };
    socket = dgram.createSocket("unix_dgram");
    socket.on("error", (err) => log.warn({ err: err.message }, "systemd notification failed"));
  }
  const send = (message: string) => {
    if (!socket || !path) return;
    const buf = Buffer.from(message);
    socket.send(buf, 0, buf.length, path, (err) => {
      if (err) log.warn({ err: err.message }, "systemd notification failed");
    });
  };
  // STATUS= is one line; a newline would start another assignment.
  const oneLine = (s: string) => s.replace(/[\r\n]+/g, " ");
  return {
    enabled: socket !== undefined,
    watchdogIntervalMs,
    ready: (s) => send(`READY=1\nSTATUS=${oneLine(s)}\nMAINPID=${pid}`),
    status: (s) => send(`STATUS=${oneLine(s)}`),
    stopping: (s) => send(`STOPPING=1\nSTATUS=${oneLine(s)}`),
    reloading: () => send("RELOADING=1"),
    watchdog: () => send("WATCHDOG=1"),
    close: () => {
      socket?.close();
      socket = undefined;
    },
  };
}

/** Half of WATCHDOG_USEC, when WATCHDOG_PID is absent or ours. */
function watchdogInterval(env: Record<string, string | undefined>, pid: number) {
  const usec = Number(env.WATCHDOG_USEC);
  if (!Number.isFinite(usec) || usec <= 0) return undefined;
  if (env.WATCHDOG_PID && Number(env.WATCHDOG_PID) !== pid) return undefined;
  return Math.max(1, Math.floor(usec / 2000));
}
