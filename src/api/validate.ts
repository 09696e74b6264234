import * as z from "zod";
import { MENU_TIMEOUT_MAX_SECONDS } from "../netboot/menu-settings.js";
import { ApiError } from "./errors.js";

/** C0/C1 controls and the Unicode line/paragraph separators: never part of a name. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: that is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

/**
 * A name shown in lists, logs and iPXE menus: trimmed, 1..max characters, no control
 * characters (a newline in a name would forge log lines and script lines).
 */
export function zName(max = 128) {
  return z
    .string()
    .trim()
    .min(1, "must not be empty")
    .max(max, `at most ${max} characters`)
    .refine((s) => !CONTROL.test(s), "must not contain control characters");
}

/** Free text (descriptions): tabs and newlines allowed, other control characters not. */
export function zText(max = 2000) {
  return z
    .string()
    .max(max, `at most ${max} characters`)
    .refine(
      // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing them
      (s) => !/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(s),
      "must not contain control characters",
    );
}

/** Optional free text that may also be null (cleared). */
export function zOptionalText(max = 2000) {
  return zText(max).nullable().optional();
}

/** `{id}` path parameter: a positive integer. */
export const idParams = z.object({ id: z.coerce.number().int().positive() });

/**
 * Turns a zod failure into the contract's 422: `detail` and `field` name the first
 * field at fault ("field: problem"); `errors` lists them all.
 */
export function validationError(
  where: "body" | "query" | "params",
  error: z.ZodError,
  input?: unknown,
): ApiError {
  const problems = error.issues.map((issue) => {
    const path = issue.path.map(String);
    if (issue.code === "unrecognized_keys") {
      const key = issue.keys[0] ?? "";
      return { field: [...path, key].join("."), message: `unknown field "${key}"` };
    }
    const missing = path.length > 0 && valueAt(input, path) === undefined;
    return { field: path.join(".") || where, message: missing ? "required" : describe(issue) };
  });
  // A value the caller sent and got wrong says more than a field it left out.
  problems.sort((a, b) => Number(a.message === "required") - Number(b.message === "required"));
  const first = problems[0] ?? { field: where, message: "invalid" };
  return new ApiError(422, "validation_error", `${first.field}: ${first.message}`, {
    field: first.field,
    location: where,
    errors: problems,
  });
}

function valueAt(input: unknown, path: string[]): unknown {
  let cur = input;
  for (const p of path) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return cur;
}

function describe(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case "invalid_type":
      return `expected ${issue.expected}`;
    case "invalid_value":
      return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`;
    default:
      return issue.message;
  }
}

/** Runs a schema, throwing the contract's 422 on failure. */
export function parseOr422<S extends z.ZodType>(
  schema: S,
  value: unknown,
  where: "body" | "query" | "params",
): z.output<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw validationError(where, r.error, value);
  return r.data;
}

/** A short label that may be empty (location, room, asset tag): one line, no controls. */
export function zLabel(max = 128) {
  return z
    .string()
    .trim()
    .max(max, `at most ${max} characters`)
    .refine((s) => !CONTROL.test(s), "must not contain control characters");
}

/** A password as typed by a person: 8..1024 characters, no control characters. */
export const zPassword = z
  .string()
  .min(8, "at least 8 characters")
  .max(1024, "at most 1024 characters")
  .refine((s) => !CONTROL.test(s), "must not contain control characters");

export const zUsername = z
  .string()
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/,
    "1 to 64 letters, digits, . _ @ - (starting with a letter or digit)",
  );

export const zEmail = z.email("a valid email address").max(254);

const IPV4 = /^((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
export const zIPv4 = z.string().regex(IPV4, "an IPv4 address such as 192.168.1.10");

/** An RFC 1123 host name (labels of letters, digits and hyphens). */
export const zHostname = z
  .string()
  .max(253)
  .regex(
    /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/,
    "a host name (letters, digits, hyphens and dots)",
  );

/**
 * A MAC address in any usual spelling (00:11:22:AA:BB:CC, 00-11-22-aa-bb-cc,
 * 0011.22aa.bbcc, 001122aabbcc), normalised to lowercase colon form; multicast and
 * all-zero addresses are no network card's address and are refused.
 */
export function normaliseMac(input: string): string | undefined {
  const s = input.trim();
  let hex: string;
  if (/^[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}$/.test(s))
    hex = s.replace(/[:-]/g, "");
  else if (/^[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}$/.test(s)) hex = s.replace(/\./g, "");
  else if (/^[0-9A-Fa-f]{12}$/.test(s)) hex = s;
  else return undefined;
  hex = hex.toLowerCase();
  if (hex === "000000000000" || (Number.parseInt(hex.slice(0, 2), 16) & 1) === 1) return undefined;
  return hex.match(/../g)!.join(":");
}

export const zMac = z.string().transform((s, ctx) => {
  const mac = normaliseMac(s);
  if (!mac) {
    ctx.addIssue({ code: "custom", message: "a unicast MAC address such as 00:11:22:33:44:55" });
    return z.NEVER;
  }
  return mac;
});

/** A boot menu's wait in seconds: its entries' URLs are valid 5 minutes (netboot/menu-settings.ts). */
export const zMenuTimeout = z.number().int().min(1).max(MENU_TIMEOUT_MAX_SECONDS);
