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
  /**
   * When /etc/group has no `bootfleet` group (and the daemon runs as root): asks the other
   * group databases (NSS, through getent) and opens the socket to the group they name.
   * Called once the daemon is ready: a process at start costs the event loop a fork
   * (~45 ms of CPU on the build VM), and a directory behind NSS (LDAP, sssd) may answer
   * slowly or not at all; until then the socket is root's alone (0600), never wider.
   */
  openToNssGroup(): Promise<void>;
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
 * The gid of the `bootfleet` group in /etc/group, or undefined. The package's system group
 * is there, and reading it costs no process.
 */
async function gidFromEtcGroup(): Promise<number | undefined> {
  try {
    return gidIn(await readFile("/etc/group", "utf8"));
  } catch {
    return undefined; // no /etc/group: NSS may still know the group (openToNssGroup)
  }
}

/** The gid of the `bootfleet` group in any group database (getent), or undefined. */
async function gidFromNss(): Promise<number | undefined> {
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

/** Owner root, group `bootfleet`, 0660: the group's members may connect. */
function openToGroup(path: string, gid: number): void {
  chownSync(path, 0, gid);
  chmodSync(path, 0o660);
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
  const isRoot = process.getuid?.() === 0;
  // The group only matters to root, who can give the socket to it.
  const groupLookup = isRoot ? gidFromEtcGroup() : Promise.resolve(undefined); // meanwhile
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
  if (gid !== undefined) openToGroup(path, gid);
  else chmodSync(path, 0o600);
  server.on("error", (err) => opts.log.error({ err: err.message }, "local socket error"));
  opts.log.info({ path, group: gid !== undefined ? "bootfleet" : null }, "local API socket");
  let closed = false;
  return {
    path,
    openToNssGroup: async () => {
      if (!isRoot || gid !== undefined) return;
      const nssGid = await gidFromNss();
      if (nssGid === undefined || closed) return;
      try {
        openToGroup(path, nssGid);
        opts.log.info({ path, group: "bootfleet" }, "local API socket opened to its group");
      } catch (err) {
        opts.log.warn(
          { path, err: (err as Error).message },
          "local API socket: could not open it to the bootfleet group; it stays 0600",
        );
      }
    },
    close: () =>
      new Promise<void>((resolve) => {
        closed = true;
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
