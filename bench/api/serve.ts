// The bare server run.ts measures bootfleet's daemon against, in its own process so that it
// has one event loop of its own, like the daemon:
//
//   node --import tsx bench/api/serve.ts bare RESPONSES_JSON
//     a bare Hono app on @hono/node-server's serve(): the same paths, answering with bytes
//     fetched from the daemon beforehand ({ "/api/machines": {body, type}, "/boot/<mac>": ... }).
//
// It listens on 127.0.0.1, an ephemeral port, and prints {"port": N} on stdout once bound.

import { readFileSync } from "node:fs";
import { serve } from "@hono/node-server";
import { Hono } from "hono";

export interface CannedResponse {
  /** base64 of the body bytes. */
  body: string;
  type: string;
}

const [mode, arg] = process.argv.slice(2);

function serveBare(file: string): Promise<number> {
  const canned = JSON.parse(readFileSync(file, "utf8")) as Record<string, CannedResponse>;
  const bytes = new Map(
    Object.entries(canned).map(([k, v]) => [
      k,
      { body: Buffer.from(v.body, "base64"), type: v.type },
    ]),
  );
  const app = new Hono();
  const answer = (key: string) => {
    const r = bytes.get(key);
    return r
      ? new Response(r.body, { headers: { "content-type": r.type } })
      : new Response("not found\n", { status: 404 });
  };
  app.get("/api/machines", () => answer("/api/machines"));
  app.get("/boot/:mac/:token", (c) => answer(`/boot/${c.req.param("mac")}`));
  return new Promise((resolve) => {
    serve({ fetch: app.fetch, hostname: "127.0.0.1", port: 0 }, (info) => resolve(info.port));
  });
}

const port =
  mode === "bare" && arg
    ? await serveBare(arg)
    : (() => {
        process.stderr.write("usage: serve.ts bare RESPONSES_JSON\n");
        process.exit(2);
      })();
process.stdout.write(`${JSON.stringify({ port })}\n`);
// An orderly exit on SIGTERM, so that --cpu-prof (run.ts --profile) writes its profile.
process.once("SIGTERM", () => process.exit(0));
