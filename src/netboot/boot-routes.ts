import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { getConnInfo } from "@hono/node-server/conninfo";
import { type Context, Hono } from "hono";
import type { Logger } from "pino";
import type { Store } from "../store/index.js";
import type { Machine } from "../store/machines.js";
import type { BootChoice } from "./boot-plan.js";
import { type BootScriptDeps, scriptFor } from "./boot-script.js";
import type { ClientAddresses } from "./client-addresses.js";
import { createLogLimiter } from "./log-limiter.js";
import { verifyBootToken } from "./script/token.js";

export interface BootRoutesDeps extends BootScriptDeps {
  store: Store;
  log: Logger;
  bootKey: Uint8Array;
  /** Where the proxy-DHCP saw each MAC. */
  addresses: ClientAddresses;
  /** iPXE binaries by name, for UEFI HTTP boot clients. */
  ipxeBinaries: Readonly<Record<string, string>>;
  imagesDir: string;
  /** After a script was rendered, with the machine the route already read (none if unknown). */
  onScriptServed?(machine: Machine | undefined, clientIp: string, kind: string): void;
}

/** Files of a kernel image an iPXE client may fetch: nothing else leaves the library. */
const KERNEL_FILES = new Set(["vmlinuz", "initrd.img"]);

/**
 * The HTTP side of netboot, under /boot:
 * - `GET /boot/:mac/:token`: the machine's iPXE script. The URL came from the proxy-DHCP
 *   in answer to that very client; the token binds it to the MAC (and, from port 4011,
 *   to the client's address), and the request must come from the address the proxy saw
 *   that MAC use. A script can carry a CHAP secret: another host on the LAN gets 403.
 * - `GET /boot/ipxe/:name`: iPXE binaries for UEFI HTTP boot clients.
 * - `GET /boot/files/:image/:name`: kernel and initrd of a kernel image.
 * Every answer has a Content-Length: iPXE is far slower without one.
 */
export function bootRoutes(deps: BootRoutesDeps) {
  const app = new Hono();
  const refusedLog = createLogLimiter({ max: 20, intervalMs: 60_000 });

  const refuse = (c: Context, mac: string, ip: string, reason: string) => {
    const { allowed, suppressed } = refusedLog.take();
    if (allowed) deps.log.warn({ mac, from: ip, reason, suppressed }, "boot script refused");
    return c.text(`refused: ${reason}\n`, 403);
  };

  app.get("/ipxe/:name", async (c) => {
    const path = deps.ipxeBinaries[c.req.param("name")];
    if (!path) return c.text("not found\n", 404);
    return sendFile(c, path);
  });

  app.get("/files/:image/:name", async (c) => {
    const name = c.req.param("name");
    const image = deps.store.images.get(Number(c.req.param("image")));
    if (
      !KERNEL_FILES.has(name) ||
      !image ||
      image.status !== "ready" ||
      image.filename.includes("/")
    ) {
      return c.text("not found\n", 404);
    }
    return sendFile(c, join(deps.imagesDir, image.filename, name));
  });

  app.get("/:mac/:token", async (c) => {
    const macHex = c.req.param("mac");
    const ip = clientIp(c);
    if (!/^[0-9a-f]{12}$/.test(macHex)) return c.text("not found\n", 404);
    const mac = macHex.match(/../g)!.join(":");
    const verdict = verifyBootToken(deps.bootKey, c.req.param("token"), {
      mac,
      ip,
      now: Date.now(),
    });
    if (!verdict.ok) return refuse(c, mac, ip, `token ${verdict.reason}`);
    const seen = deps.addresses.get(mac);
    if (seen !== undefined && seen !== ip) return refuse(c, mac, ip, `expected from ${seen}`);
    if (seen === undefined) deps.addresses.record(mac, ip);

    const choice: BootChoice = {};
    const target = c.req.query("target");
    if (target !== undefined && /^\d{1,9}$/.test(target)) choice.targetId = Number(target);
    if (c.req.query("local") === "1") choice.local = true;
    const machine = deps.store.machines.getByMac(mac);
    const rendered = await scriptFor(deps, mac, machine, choice);
    deps.onScriptServed?.(machine, ip, rendered.kind);
    deps.log.info({ mac, from: ip, kind: rendered.kind }, "boot script served");
    return c.body(rendered.text, 200, {
      "content-type": "text/plain; charset=utf-8",
      "cache-control": "no-store",
    });
  });
  return app;
}

function clientIp(c: Context): string {
  const address = getConnInfo(c).remote.address ?? "";
  return address.startsWith("::ffff:") ? address.slice(7) : address;
}

async function sendFile(c: Context, path: string) {
  let size: number;
  try {
    const s = await stat(path);
    if (!s.isFile()) return c.text("not found\n", 404);
    size = s.size;
  } catch {
    return c.text("not found\n", 404);
  }
  const body = Readable.toWeb(createReadStream(path)) as ReadableStream;
  return c.body(body, 200, {
    "content-type": "application/octet-stream",
    "content-length": String(size),
  });
}
