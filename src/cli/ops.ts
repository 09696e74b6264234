import { type ApiAnswer, apiErrorText, callApi } from "./client.js";
import { bar, table } from "./table.js";

/**
 * The daily operations against the running daemon, over its local socket. Exit codes:
 * 0 done, 1 the daemon refused or the work failed, 2 usage, 3 daemon not reachable
 * (UnreachableError, mapped by main).
 */

export class OpsUsageError extends Error {}

export interface OpsIo {
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream;
}

export interface OpsContext {
  socket: string;
  json: boolean;
  io: OpsIo;
  /** Poll interval of `jobs watch`. */
  pollMs?: number;
}

type Row = Record<string, unknown>;

function fail(ctx: OpsContext, text: string): number {
  ctx.io.stderr.write(`bootfleet: ${text}\n`);
  return 1;
}

function out(ctx: OpsContext, data: unknown, human: () => string): number {
  ctx.io.stdout.write(ctx.json ? `${JSON.stringify(data, null, 2)}\n` : human());
  return 0;
}

async function get(ctx: OpsContext, path: string): Promise<ApiAnswer> {
  return callApi(ctx.socket, "GET", path);
}

function id(arg: string | undefined, what: string): number {
  const n = Number(arg);
  if (!arg || !Number.isInteger(n) || n <= 0) {
    throw new OpsUsageError(`${what}: expected a positive number, got "${arg ?? ""}"`);
  }
  return n;
}

/** A 404 from the router itself: this daemon has no such route (not a missing record). */
const noRoute = (a: ApiAnswer) =>
  a.status === 404 && /^no route for /.test(String((a.body as Row | null)?.detail ?? ""));

/** Health of the daemon; exit 1 unless healthy. */
export async function status(ctx: OpsContext): Promise<number> {
  const a = await get(ctx, "/api/health/detailed");
  if (a.status !== 200 && a.status !== 503) return fail(ctx, apiErrorText(a));
  const b = a.body as Row;
  out(ctx, b, () => {
    const lines = [`status    ${b.status}`, `version   ${b.version ?? "-"}`];
    const checks = (b.checks ?? {}) as Row;
    for (const [k, v] of Object.entries(checks)) {
      if (k === "system" || !v || typeof v !== "object") continue;
      const st = (v as Row).status;
      if (typeof st === "string") lines.push(`${k.padEnd(9)} ${st}`);
      else {
        for (const [name, sub] of Object.entries(v as Row)) {
          lines.push(`${k.padEnd(9)} ${String((sub as Row)?.status)}  ${name}`);
        }
      }
    }
    return `${lines.join("\n")}\n`;
  });
  return b.status === "healthy" ? 0 : 1;
}

export async function machines(ctx: OpsContext, args: string[]): Promise<number> {
  const [sub, arg] = args;
  if (sub === "list") {
    const a = await get(ctx, "/api/machines?limit=1000");
    if (a.status !== 200) return fail(ctx, apiErrorText(a));
    const rows = a.body as Row[];
    return out(ctx, rows, () =>
      table(
        ["ID", "NAME", "MAC", "IP", "IMAGE", "STATE"],
        rows.map((m) => [
          m.id,
          m.name,
          m.mac_address,
          m.ip_address,
          m.boot_image_id,
          m.live_state ?? m.state ?? m.status,
        ]),
      ),
    );
  }
  if (sub === "show") {
    const a = await get(ctx, `/api/machines/${id(arg, "machine id")}`);
    if (a.status !== 200) return fail(ctx, apiErrorText(a));
    const m = a.body as Row;
    return out(ctx, m, () =>
      table(
        ["FIELD", "VALUE"],
        Object.entries(m).map(([k, v]) => [
          k,
          typeof v === "object" && v !== null ? JSON.stringify(v) : v,
        ]),
      ),
    );
  }
  throw new OpsUsageError(`machines: expected "list" or "show ID", got "${sub ?? ""}"`);
}

/** What `image build` takes besides the recipe (--name, --description). */
export interface BuildFlags {
  name?: string | undefined;
  description?: string | undefined;
}

export async function images(
  ctx: OpsContext,
  args: string[],
  flags: BuildFlags = {},
): Promise<number> {
  const [sub, arg] = args;
  if (sub === "build") return buildImage(ctx, args.slice(1), flags);
  if (sub === "recipes") return recipes(ctx);
  if (sub === "list") {
    const a = await get(ctx, "/api/images?limit=1000");
    if (a.status !== 200) return fail(ctx, apiErrorText(a));
    const rows = a.body as Row[];
    return out(ctx, rows, () =>
      table(
        ["ID", "NAME", "FORMAT", "SIZE", "STATUS"],
        rows.map((i) => [
          i.id,
          i.name,
          i.format,
          i.virtual_size ?? i.size_bytes ?? i.size,
          i.status,
        ]),
      ),
    );
  }
  if (sub === "versions") {
    const a = await get(ctx, `/api/images/${id(arg, "image id")}/versions`);
    if (noRoute(a)) {
      return fail(ctx, "this daemon has no image versions API (GET /api/images/ID/versions: 404)");
    }
    if (a.status !== 200) return fail(ctx, apiErrorText(a));
    const rows = (Array.isArray(a.body) ? a.body : ((a.body as Row).versions ?? [])) as Row[];
    return out(ctx, a.body, () =>
      table(
        ["VERSION", "STATUS", "CREATED", "NOTE"],
        rows.map((v) => [v.version ?? v.id, v.status, v.created_at, v.note ?? v.comment]),
      ),
    );
  }
  throw new OpsUsageError(
    `image: expected "list", "versions ID", "recipes" or "build RECIPE --name NAME", got "${sub ?? ""}"`,
  );
}

/** The recipes the daemon can build. */
async function recipes(ctx: OpsContext): Promise<number> {
  const a = await get(ctx, "/api/images/recipes");
  if (noRoute(a))
    return fail(ctx, "this daemon has no image builds (GET /api/images/recipes: 404)");
  if (a.status !== 200) return fail(ctx, apiErrorText(a));
  const rows = ((a.body as Row).recipes ?? []) as Row[];
  return out(ctx, a.body, () =>
    rows.length === 0
      ? "no recipes installed ([images] recipes_dir)\n"
      : table(
          ["NAME", "STEPS", "CACHED", "DESCRIPTION"],
          rows.map((r) => [
            r.name,
            ((r.steps ?? []) as Row[]).map((s) => s.id).join(","),
            r.cached ? "yes" : "no",
            r.description,
          ]),
        ),
  );
}

/** Starts a build of an installed recipe and follows its job to the end. */
async function buildImage(ctx: OpsContext, args: string[], flags: BuildFlags): Promise<number> {
  const [recipe, extra] = args;
  if (!recipe) throw new OpsUsageError("image build: expected a RECIPE (bootfleet image recipes)");
  if (extra !== undefined) throw new OpsUsageError(`image build: unexpected argument "${extra}"`);
  if (!flags.name) throw new OpsUsageError("image build: --name NAME is required");
  const a = await callApi(ctx.socket, "POST", "/api/images/build", {
    recipe,
    name: flags.name,
    ...(flags.description !== undefined ? { description: flags.description } : {}),
  });
  if (noRoute(a)) return fail(ctx, "this daemon has no image builds (POST /api/images/build: 404)");
  if (a.status !== 202) return fail(ctx, apiErrorText(a));
  const b = a.body as Row;
  const jobId = Number(b.job_id);
  if (ctx.json) ctx.io.stdout.write(`${JSON.stringify(b)}\n`);
  else {
    ctx.io.stdout.write(
      `building image ${b.image_id} ${JSON.stringify(flags.name)} from recipe ${recipe}: job ${jobId}\n`,
    );
  }
  const code = await followJob(ctx, jobId);
  if (code === 0 && !ctx.json) ctx.io.stdout.write(`image ${b.image_id} is ready\n`);
  return code;
}

export async function power(ctx: OpsContext, args: string[], location?: string): Promise<number> {
  const [action, target] = args;
  if (action !== "on" && action !== "off") {
    throw new OpsUsageError(`power: expected "on" or "off", got "${action ?? ""}"`);
  }
  if (location !== undefined) {
    if (target !== undefined)
      throw new OpsUsageError("power: give a MACHINE or --location, not both");
    const loc = await resolveLocation(ctx, location);
    if (typeof loc === "number" && loc < 0) return 1;
    const a = await callApi(ctx.socket, "POST", "/api/machines/bulk", {
      action: `power_${action}`,
      location_id: loc,
    });
    if (noRoute(a)) {
      return fail(ctx, "this daemon has no bulk actions API (POST /api/machines/bulk: 404)");
    }
    if (a.status >= 300) return fail(ctx, apiErrorText(a));
    const job = (a.body as Row).job_id ?? (a.body as Row).id;
    return out(
      ctx,
      a.body,
      () => `power ${action} for location ${location}: job ${job} (bootfleet jobs watch ${job})\n`,
    );
  }
  const a = await callApi(
    ctx.socket,
    "POST",
    `/api/machines/${id(target, "machine id")}/power/${action}`,
  );
  if (a.status >= 300) return fail(ctx, apiErrorText(a));
  return out(ctx, a.body, () => `machine ${target}: power ${action} sent\n`);
}

/** A location id from an id or a name; -1 after writing why not. */
async function resolveLocation(ctx: OpsContext, name: string): Promise<number> {
  if (/^\d+$/.test(name)) return Number(name);
  const a = await get(ctx, "/api/locations?limit=1000");
  if (noRoute(a)) {
    fail(ctx, "this daemon has no locations API (GET /api/locations: 404)");
    return -1;
  }
  if (a.status !== 200) {
    fail(ctx, apiErrorText(a));
    return -1;
  }
  const rows = (Array.isArray(a.body) ? a.body : ((a.body as Row).items ?? [])) as Row[];
  const hit = rows.find((l) => l.name === name);
  if (!hit) {
    fail(ctx, `no location named "${name}"`);
    return -1;
  }
  return Number(hit.id);
}

export async function alerts(ctx: OpsContext): Promise<number> {
  const a = await get(ctx, "/api/alerts");
  if (noRoute(a)) return fail(ctx, "this daemon has no alerts API (GET /api/alerts: 404)");
  if (a.status !== 200) return fail(ctx, apiErrorText(a));
  const rows = (Array.isArray(a.body) ? a.body : ((a.body as Row).items ?? [])) as Row[];
  return out(ctx, a.body, () =>
    rows.length === 0
      ? "no alerts\n"
      : table(
          ["ID", "SEVERITY", "KIND", "MACHINE", "CREATED", "MESSAGE"],
          rows.map((r) => [
            r.id,
            r.severity,
            r.kind ?? r.type,
            r.machine_id,
            r.created_at,
            r.message,
          ]),
        ),
  );
}

const FINAL = new Set(["succeeded", "failed", "cancelled"]);

/** Follows a job until it ends: a bar on a terminal, one line per change otherwise. */
export async function watchJob(ctx: OpsContext, args: string[]): Promise<number> {
  const [sub, arg] = args;
  if (sub !== "watch") throw new OpsUsageError(`jobs: expected "watch ID", got "${sub ?? ""}"`);
  return followJob(ctx, id(arg, "job id"));
}

async function followJob(ctx: OpsContext, jobId: number): Promise<number> {
  const tty = ctx.io.stdout.isTTY === true && !ctx.json;
  let last = "";
  for (;;) {
    const a = await get(ctx, `/api/jobs/${jobId}`);
    if (a.status !== 200) return fail(ctx, apiErrorText(a));
    const j = a.body as Row;
    const progress = Number(j.progress ?? 0);
    const step = Array.isArray(j.steps)
      ? ((j.steps as Row[]).find((s) => s.status === "running")?.name as string | undefined)
      : undefined;
    const line = `job ${jobId} ${j.type} ${j.status} ${progress}%${step ? ` ${step}` : ""}`;
    if (ctx.json) {
      if (line !== last) ctx.io.stdout.write(`${JSON.stringify(j)}\n`);
    } else if (tty) {
      ctx.io.stdout.write(`\r\u001b[2K${bar(progress)} ${j.status}${step ? ` ${step}` : ""}`);
    } else if (line !== last) {
      ctx.io.stdout.write(`${line}\n`);
    }
    last = line;
    if (FINAL.has(String(j.status))) {
      if (tty) ctx.io.stdout.write("\n");
      if (j.status !== "succeeded") {
        return fail(ctx, `job ${jobId} ${j.status}${j.error ? `: ${j.error}` : ""}`);
      }
      return 0;
    }
    await new Promise((r) => setTimeout(r, ctx.pollMs ?? 500));
  }
}
