import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";

/**
 * A real AF_UNIX SOCK_DGRAM listener, as systemd's notify socket is, written in Python
 * so that the test does not check the daemon's notifications with the daemon's own
 * library. Each datagram arrives as one string.
 */
export async function startNotifyListener(
  t: { teardown(fn: () => void | Promise<void>): void },
  path: string,
): Promise<{
  messages: string[];
  waitFor(match: (m: string) => boolean, timeoutMs?: number): Promise<string>;
}> {
  const script = [
    "import socket, sys, json",
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)",
    "s.bind(sys.argv[1])",
    "print('LISTENING', flush=True)",
    "while True:",
    "    data = s.recv(4096)",
    "    print(json.dumps(data.decode()), flush=True)",
  ].join("\n");
  const proc: ChildProcess = spawn("python3", ["-c", script, path], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  t.teardown(() => {
    proc.kill("SIGKILL");
  });
  const messages: string[] = [];
  const waiters: { match: (m: string) => boolean; resolve: (m: string) => void }[] = [];
  const lines = createInterface({ input: proc.stdout! });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("notify listener did not start")), 10_000);
    lines.on("line", (line) => {
      if (line === "LISTENING") {
        clearTimeout(timer);
        resolve();
        return;
      }
      const m = JSON.parse(line) as string;
      messages.push(m);
      for (const w of [...waiters]) {
        if (w.match(m)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(m);
        }
      }
    });
  });
  return {
    messages,
    waitFor: (match, timeoutMs = 10_000) => {
      const seen = messages.find(match);
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((res, rej) => {
        const timer = setTimeout(
          () =>
            rej(
              new Error(
                `no matching notification in ${timeoutMs} ms; got ${JSON.stringify(messages)}`,
              ),
            ),
          timeoutMs,
        );
        waiters.push({
          match,
          resolve: (m) => {
            clearTimeout(timer);
            res(m);
          },
        });
      });
    },
  };
}
