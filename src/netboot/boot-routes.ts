import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { getConnInfo } from "@hono/node-server/conninfo";
import { type Context, Hono } from "hono";
import type { Logger } from "pino";
import type { Store } from "../store/index.js";
import type { Machine } from "../store/machines.js";
import type { BootChoice, BootPlan } from "./boot-plan.js";
import { type BootScriptDeps, planFor, scriptFor } from "./boot-script.js";
import { createLogLimiter } from "./log-limiter.js";
import { checkPeer, type PeerBindingDeps } from "./peer-binding.js";
import { type UsedTokens, verifyBootToken } from "./script/token.js";

export interface BootRoutesDeps extends BootScriptDeps {
  store: Store;
  log: Logger;
  bootKey: Uint8Array;
  /** Who the fetching peer is: the neighbour table, and the subnets allowed routed boot. */
  peers: PeerBindingDeps;
  /** Tokens that already served a secret-carrying script. */
  usedTokens: UsedTokens;
  /** iPXE binaries by name, for UEFI HTTP boot clients. */
  ipxeBinaries: Readonly<Record<string, string>>;
  imagesDir: string;
  /** After a script was rendered, with the machine the route already read (none if unknown). */
  onScriptServed?(machine: Machine | undefined, clientIp: string, kind: string): void;
  /** After an iPXE binary went out whole (UEFI HTTP boot's counterpart of the TFTP phase). */
  onBinaryServed?(e: HttpBinaryEvent): void;
}

export interface HttpBinaryEvent {
  /** The name asked for, e.g. snponly.efi. */
  file: string;
  bytes: number;
  durationMs: number;
  clientAddress: string;
}

/** Files of a kernel image an iPXE client may fetch: nothing else leaves the library. */
const KERNEL_FILES = new Set(["vmlinuz", "initrd.img"]);

/**
 * The HTTP side of netboot, under /boot:
 * - `GET /boot/:mac/:token`: the machine's iPXE script. The token proves the URL was
 *   issued by this server for that MAC and is fresh. A script with anything of the
 *   machine's own in it (see bindingOf) is served only to the machine itself: the peer's
 *   MAC in the kernel's neighbour table is the MAC in the path (or, behind a router, the
 *   machine's fixed address in a subnet allowed routed boot); another host gets 403. A
 *   secret-carrying script is served once per URL. Only then is a sanboot prepared: its
 *   CHAP secret rotated and a reset-on-reboot disk reset, so neither happens for a
 *   packet that merely names the machine.
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
    const name = c.req.param("name");
    const path = deps.ipxeBinaries[name];
    if (!path) return c.text("not found\n", 404);
    const started = performance.now();
    const clientAddress = clientIp(c);
    return sendFile(c, path, (bytes) =>
      deps.onBinaryServed?.({
        file: name,
        bytes,
        durationMs: performance.now() - started,
        clientAddress,
      }),
    );
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
    const started = performance.now();
    const macHex = c.req.param("mac");
    const ip = clientIp(c);
    if (!/^[0-9a-f]{12}$/.test(macHex)) return c.text("not found\n", 404);
    const mac = macHex.match(/../g)!.join(":");
    const token = c.req.param("token");
    const verdict = verifyBootToken(deps.bootKey, token, { mac, now: Date.now() });
    if (!verdict.ok) return refuse(c, mac, ip, `token ${verdict.reason}`);

    const choice: BootChoice = {};
    const target = c.req.query("target");
    if (target !== undefined && /^\d{1,9}$/.test(target)) choice.targetId = Number(target);
    if (c.req.query("local") === "1") choice.local = true;
    const machine = deps.store.machines.getByMac(mac);
    const binding = bindingOf(planFor(deps, machine, choice));
    if (binding !== "anyone") {
      const peer = await checkPeer(deps.peers, mac, ip, machine);
      if (!peer.ok) return refuse(c, mac, ip, peer.reason);
      // Marked before the script is made: two fetches racing with one URL get one script.
      if (binding === "machine-once" && !deps.usedTokens.use(token, verdict.expiresAt)) {
        return refuse(c, mac, ip, "this script URL was already used");
      }
    }
    const rendered = await scriptFor(deps, mac, machine, choice);
    deps.onScriptServed?.(machine, ip, rendered.kind);
    // How long the answer took here (a sanboot's includes its target's new secret).
    const ms = Math.round(performance.now() - started);
    deps.log.info({ mac, from: ip, kind: rendered.kind, duration_ms: ms }, "boot script served");
    return c.body(rendered.text, 200, {
      "content-type": "text/plain; charset=utf-8",
      "cache-control": "no-store",
    });
  });
  return app;
}

/**
 * Who may fetch the script a plan leads to:
 * - anyone: the discovery loop and "boot locally" hold nothing of the machine's own;
 * - the machine: its menu (target names, fresh URLs of its own), re-fetchable; each entry
 *   is a URL of this same route naming one target, which plans a sanboot and so is
 *   bound as strictly as a machine with one target;
 * - the machine, once per URL: a sanboot script (the CHAP secret; preparing it rotates
 *   that secret and may reset the disk), a kernel command line or an admin's custom
 *   script (either may hold credentials).
 */
export function bindingOf(plan: BootPlan): "anyone" | "machine" | "machine-once" {
  switch (plan.boot) {
    case "discovery":
    case "local":
      return "anyone";
    case "menu":
      return "machine";
    default:
      return "machine-once";
  }
}

function clientIp(c: Context): string {
  const address = getConnInfo(c).remote.address ?? "";
  return address.startsWith("::ffff:") ? address.slice(7) : address;
}

/**
 * The file with its length. A HEAD gets the headers alone (EDK2's HTTP boot asks for the
 * size first), so no file is opened for it; `sent` is told once a GET's body was read to
 * its end.
 */
async function sendFile(c: Context, path: string, sent?: (bytes: number) => void) {
  let size: number;
  try {
    const s = await stat(path);
    if (!s.isFile()) return c.text("not found\n", 404);
    size = s.size;
  } catch {
    return c.text("not found\n", 404);
  }
  const headers = { "content-type": "application/octet-stream", "content-length": String(size) };
  if (c.req.method === "HEAD") return c.body(null, 200, headers);
  const file = createReadStream(path);
  if (sent) file.once("end", () => sent(size));
  return c.body(Readable.toWeb(file) as ReadableStream, 200, headers);
}
