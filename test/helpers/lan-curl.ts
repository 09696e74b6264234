import type { TestLan } from "./lan.js";

/** An API reply: the HTTP status and the parsed JSON body (undefined when empty). */
export interface ApiReply {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: JSON from the API, read by the test
  json: any;
}

/**
 * One request to bootfleetd's REST API at `http://<server>/api<path>`, made by curl inside
 * the LAN's namespace, where a PC or an admin's machine on that LAN would make it. The
 * token and the body go to curl on stdin (a curl config), never on its command line.
 */
export function lanCurl(
  lan: TestLan,
  server: string,
  method: string,
  path: string,
  body?: unknown,
  token?: string,
): ApiReply {
  let config = token ? `header = "Authorization: Bearer ${token}"\n` : "";
  if (body !== undefined) config += `data-binary = ${JSON.stringify(JSON.stringify(body))}\n`;
  const out = lan.exec(
    "curl",
    [
      "-sS",
      "-K",
      "-",
      "-X",
      method,
      "-H",
      "Content-Type: application/json",
      "-w",
      "\n%{http_code}",
      `http://${server}/api${path}`,
    ],
    { input: config },
  );
  const nl = out.lastIndexOf("\n");
  const text = out.slice(0, nl);
  return { status: Number(out.slice(nl + 1)), json: text ? JSON.parse(text) : undefined };
}
