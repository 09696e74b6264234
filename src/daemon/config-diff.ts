import type { Config } from "../config/config.js";

/** Keys a running daemon applies on SIGHUP; any other change waits for a restart. */
export const LIVE_KEYS: ReadonlySet<string> = new Set(["log.level", "dhcp.reply_delay_ms"]);

/** The dotted keys whose values differ between two configurations. */
export function changedKeys(a: Config, b: Config): string[] {
  const fa = flatten(a);
  const fb = flatten(b);
  return [...new Set([...Object.keys(fa), ...Object.keys(fb)])].filter(
    (k) => JSON.stringify(fa[k]) !== JSON.stringify(fb[k]),
  );
}

function flatten(obj: object, prefix = ""): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v)) Object.assign(out, flatten(v, key));
    else out[key] = v;
  }
  return out;
}
