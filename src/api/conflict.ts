import { ApiError } from "./errors.js";

/** SQLite's answer to a UNIQUE violation, whichever index it hit. */
export function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: string })?.code;
  return code === "SQLITE_CONSTRAINT_UNIQUE" || code === "SQLITE_CONSTRAINT_PRIMARYKEY";
}

/**
 * Runs a write and turns a UNIQUE violation into 409 conflict_error. The database, not
 * a look-up before the write, decides: two concurrent creations of the same name
 * cannot both pass.
 */
export function conflictOnUnique<T>(fn: () => T, detail: (err: Error) => string): T {
  try {
    return fn();
  } catch (err) {
    if (isUniqueViolation(err)) {
      throw new ApiError(409, "conflict_error", detail(err as Error));
    }
    throw err;
  }
}

/** Which column a UNIQUE violation names ("UNIQUE constraint failed: machines.name"). */
export function uniqueColumn(err: Error): string | undefined {
  return /UNIQUE constraint failed: \w+\.(\w+)/.exec(err.message)?.[1];
}

export function notFound(what: string, id: unknown): ApiError {
  return new ApiError(404, "not_found", `${what} ${String(id)} not found`);
}
