import { execFile } from "node:child_process";
import { chmodSync, chownSync, lstatSync, mkdirSync, unlinkSync } from "node:fs";
import { readFile } from "node:fs/promises";
import type { Server } from "node:http";
import { connect, type Socket } from "node:net";
import { dirname } from "node:path";
import { promisify } from "node:util";
import { createAdaptorServer } from "@hono/node-server";
import type { Logger } from "pino";
import { trustLocalSocket } from "../api/local-socket.js";

export interface RunningLocalSocket {
  path: string;
  close(): Promise<void>;
}

function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/**
 * The gid of the `bootfleet` group, or undefined when the system has none. /etc/group
 * first: the package's system group is there, and reading it costs no process at every
 * start; any other group database (NSS) through getent, without blocking the event loop.
 */
async function bootfleetGid(): Promise<number | undefined> {
  try {
    const gid = gidIn(await readFile("/etc/group", "utf8"));
    if (gid !== undefined) return gid;
  } catch {
    // no /etc/group: NSS may still know the group
  }
  try {
    const { stdout } = await execFileAsync("getent", ["group", GROUP], { encoding: "utf8" });
    return gidIn(stdout);
  } catch {
    return undefined;
  }
}

const GROUP = "bootfleet";
const execFileAsync = promisify(execFile);

/** The gid on the `bootfleet` line of a group(5) listing. */
function gidIn(text: string): number | undefined {
  for (const line of text.split("\n")) {
    const [name, , gid] = line.split(":");
    if (name === GROUP) {
      const n = Number(gid);
      return Number.isInteger(n) && gid !== "" ? n : undefined;
    }
  }
  return undefined;
}

/**
 * The API on a unix socket for the `bootfleet` command. A request over it is the local
 * admin (src/api/local-socket.ts): the file's owner and mode decide who may connect
 * (connecting needs write permission on the socket file).
 */
export async function startLocalSocket(opts: {
  fetch: (req: Request, env?: unknown) => Response | Promise<Response>;
  path: string;
  log: Logger;
}): Promise<RunningLocalSocket> {
  const { path } = opts;
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  // A socket left by a daemon that died is removed; one a live daemon answers on is not.
  let isSocket = false;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  if (isSocket) {
    if (await answers(path)) {
      throw new Error(
        `the local API socket ${path} is served by another running bootfleetd; stop it or set [http] socket`,
      );
    }
    unlinkSync(path);
  }
  const groupLookup = bootfleetGid(); // meanwhile
  const server = createAdaptorServer({ fetch: opts.fetch }) as Server;
  const sockets = new Set<Socket>();
  server.on("connection", (s: Socket) => {
    trustLocalSocket(s);
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  // The socket file takes the process umask when bound: bind it private (0600), then open
  // it to the group once its group is set. Node binds inside listen(), synchronously, so
  // the umask is restored before anything else in the process can create a file.
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) =>
      reject(new Error(`the local API socket cannot listen on ${path}: ${err.message}`)),
    );
    const oldUmask = process.umask(0o177);
    try {
      server.listen(path, () => resolve());
    } finally {
      process.umask(oldUmask);
    }
  });
  const gid = await groupLookup;
  if (gid !== undefined && process.getuid?.() === 0) {
    chownSync(path, 0, gid);
    chmodSync(path, 0o660);
  } else {
    chmodSync(path, 0o600);
  }
  server.on("error", (err) => opts.log.error({ err: err.message }, "local socket error"));
  opts.log.info({ path, group: gid !== undefined ? "bootfleet" : null }, "local API socket");
  return {
    path,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => {
          try {
            unlinkSync(path);
          } catch {
            // Already gone.
          }
          resolve();
        });
        for (const s of sockets) s.destroy();
      }),
  };
}
