import { z } from "zod";
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
export function validationError(where: "body" | "query" | "params", error: z.ZodError): ApiError {
  const problems = error.issues.map((issue) => {
    const path = issue.path.map(String);
    if (issue.code === "unrecognized_keys") {
      const key = issue.keys[0] ?? "";
      return { field: [...path, key].join("."), message: `unknown field "${key}"` };
    }
    return { field: path.join(".") || where, message: describe(issue) };
  });
  const first = problems[0] ?? { field: where, message: "invalid" };
  return new ApiError(422, "validation_error", `${first.field}: ${first.message}`, {
    field: first.field,
    location: where,
    errors: problems,
  });
}

function describe(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case "invalid_type":
      return issue.input === undefined ? "required" : `expected ${issue.expected}`;
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
  if (!r.success) throw validationError(where, r.error);
  return r.data;
}
