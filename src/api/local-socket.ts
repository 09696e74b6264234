import type { IncomingMessage } from "node:http";
import type { Socket } from "node:net";
import type { Context } from "hono";
import type { Store } from "../store/index.js";
import type { AuthUser } from "./types.js";

/**
 * Connections accepted on the daemon's local unix socket. Only the daemon's socket
 * listener adds to this set, with the connection object Node gave it: nothing a client
 * sends (a header, a path, an address) can put a TCP connection here.
 */
const localSockets = new WeakSet<Socket>();

/** Called by the unix-socket listener for each connection it accepts. */
export function trustLocalSocket(socket: Socket): void {
  localSockets.add(socket);
}

/**
 * The local admin, for a request that came over the unix socket: the socket's file
 * permissions (root, or the bootfleet group) already decided who may connect. It acts as
 * the oldest active admin account, so jobs and history name a real user.
 */
export function localAdmin(c: Context, store: Store): AuthUser | undefined {
  // @hono/node-server passes the Node request as c.env (see nodeRequest in mount.ts).
  const socket = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming?.socket;
  if (!socket || !localSockets.has(socket)) return undefined;
  const admin = store.users.listRows(
    { skip: 0, limit: 1, sort: "id", order: "asc" },
    { role: "admin", status: "active" },
  ).rows[0];
  if (!admin) return undefined;
  return { id: admin.id, username: admin.username, role: "admin", sessionId: "local-socket" };
}
