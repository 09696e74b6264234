import type { IncomingMessage, Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import type { Logger } from "pino";
import { WebSocketServer } from "ws";
import { parseListen } from "../config/config.js";

export interface RunningHttpServer {
  address: AddressInfo;
  /** Requests being handled right now. */
  inFlight(): number;
  /**
   * Stops accepting, lets requests in flight finish for up to `timeoutMs`, then cuts
   * what is left. Resolves once every connection is closed.
   */
  close(timeoutMs: number): Promise<void>;
}

/** Requests whose body may take as long as it takes, as long as bytes keep coming. */
const UPLOAD_ROUTES: readonly { method: string; path: string }[] = [
  { method: "POST", path: "/api/images/upload" },
];

export function isUploadRequest(method: string | undefined, url: string | undefined): boolean {
  const path = (url ?? "").split("?")[0];
  return UPLOAD_ROUTES.some((r) => r.method === method && r.path === path);
}

export interface HttpTimeouts {
  /** Whole-request bound for every request but uploads (default 300 s). */
  requestTimeoutMs?: number;
  /** An upload is cut after this long without a byte (default 60 s); it has no whole bound. */
  uploadIdleTimeoutMs?: number;
}

export async function startHttpServer(opts: {
  fetch: (req: Request, env?: unknown) => Response | Promise<Response>;
  listen: string;
  log: Logger;
  timeouts?: HttpTimeouts;
  /**
   * Whether a request that says "Expect: 100-continue" is told to send its body (default:
   * yes). When not, the app answers it before a byte of the body is sent: an upload whose
   * Content-Length is over the limit gets its 413, where after "100 Continue" the refusal
   * raced the client's first bytes and curl reported "Send failure: Broken pipe".
   */
  expectContinue?: (req: IncomingMessage) => boolean;
}): Promise<RunningHttpServer> {
  // Upgrades go through the app like any request (so /api/ws is authenticated by the
  // same route wrapper); ws only does the handshake and framing. Clients send us nothing
  // but control frames, so messages are kept small.
  const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 });
  const server = createAdaptorServer({ fetch: opts.fetch, websocket: { server: wss } }) as Server;
  // iPXE and firmware HTTP stacks are slow and simple; keep the defaults generous but
  // bounded so a stuck client cannot hold a socket forever.
  server.headersTimeout = 30_000;
  server.keepAliveTimeout = 5_000;
  // Node's requestTimeout bounds every request alike, and a 200 GiB upload needs far more
  // than any fixed bound (300 s capped a 1 Gb/s upload near 35 GB): the bounds are per
  // request instead, whole for ordinary requests, idle for uploads.
  server.requestTimeout = 0;
  const wholeMs = opts.timeouts?.requestTimeoutMs ?? 300_000;
  const idleMs = opts.timeouts?.uploadIdleTimeoutMs ?? 60_000;
  // With a listener, Node leaves the "100 Continue" to us, and the request to be passed on.
  server.on("checkContinue", (req, res) => {
    if (opts.expectContinue?.(req) ?? true) res.writeContinue();
    server.emit("request", req, res);
  });
  let active = 0;
  server.on("request", (req, res) => {
    active++;
    res.once("close", () => active--);
    if (isUploadRequest(req.method, req.url)) {
      // Idle: the socket's inactivity timer, reset by every byte either way.
      req.setTimeout(idleMs, () => {
        opts.log.info({ url: req.url, idle_ms: idleMs }, "upload idle too long: connection cut");
        req.destroy(new Error(`no bytes for ${idleMs} ms`));
      });
      res.once("close", () => req.socket.setTimeout(0));
      return;
    }
    const timer = setTimeout(() => {
      if (req.complete) return;
      if (!res.headersSent) {
        res.writeHead(408, { "content-type": "application/json", connection: "close" });
        res.end(JSON.stringify({ error: "request_timeout", message: "request took too long" }));
      }
      req.destroy();
    }, wholeMs);
    timer.unref();
    req.once("end", () => clearTimeout(timer));
    res.once("close", () => clearTimeout(timer));
  });

  const { host, port } = parseListen(opts.listen);
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      reject(
        new Error(
          err.code === "EADDRINUSE"
            ? `HTTP cannot listen on ${opts.listen}: the address is already in use (another bootfleetd or web server?)`
            : err.code === "EACCES"
              ? `HTTP cannot listen on ${opts.listen}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)`
              : err.code === "EADDRNOTAVAIL"
                ? `HTTP cannot listen on ${opts.listen}: no interface has that address`
                : `HTTP cannot listen on ${opts.listen}: ${err.message}`,
        ),
      );
    };
    server.once("error", onError);
    server.listen({ host, port }, () => {
      server.off("error", onError);
      resolve();
    });
  });
  server.on("error", (err) => opts.log.error({ err: err.message }, "HTTP server error"));

  return {
    address: server.address() as AddressInfo,
    inFlight: () => active,
    close: (timeoutMs) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          opts.log.warn(
            { in_flight: active },
            "drain timeout: closing the requests still in flight",
          );
          server.closeAllConnections();
          // Upgraded sockets are no longer the HTTP server's to close.
          for (const ws of wss.clients) ws.terminate();
        }, timeoutMs);
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        server.closeIdleConnections();
      }),
  };
}
