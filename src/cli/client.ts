import { request } from "node:http";

/** The daemon could not be reached over its socket (exit code 3). */
export class UnreachableError extends Error {}

export interface ApiAnswer {
  status: number;
  body: unknown;
}

/**
 * One API request over the daemon's local unix socket. The socket's permissions are the
 * authentication: no token is sent.
 */
export function callApi(
  socketPath: string,
  method: string,
  path: string,
  body?: unknown,
  timeoutMs = 30_000,
): Promise<ApiAnswer> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      {
        socketPath,
        method,
        path,
        headers: {
          accept: "application/json",
          ...(payload ? { "content-type": "application/json" } : {}),
        },
        timeout: timeoutMs,
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => (text += d));
        res.on("end", () => {
          let parsed: unknown = text;
          try {
            parsed = text ? JSON.parse(text) : null;
          } catch {
            // Not JSON: hand the text back.
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", (err: NodeJS.ErrnoException) => {
      const why =
        err.code === "ENOENT"
          ? "no socket there (is bootfleetd running? is [http] socket the same?)"
          : err.code === "EACCES"
            ? "permission denied (run as root or as a member of the bootfleet group)"
            : err.code === "ECONNREFUSED"
              ? "nothing listens on it (a socket left by a stopped daemon?)"
              : err.message;
      reject(new UnreachableError(`cannot reach bootfleetd at ${socketPath}: ${why}`));
    });
    req.end(payload);
  });
}

/** The API's error text (`detail` of the error body), or the status. */
export function apiErrorText(a: ApiAnswer): string {
  const b = a.body as { detail?: unknown; error?: unknown } | null;
  const msg =
    typeof b?.detail === "string" ? b.detail : typeof b?.error === "string" ? b.error : "";
  return msg ? `${msg} (HTTP ${a.status})` : `HTTP ${a.status}`;
}
