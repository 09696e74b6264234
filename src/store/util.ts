/** ISO-8601 UTC with milliseconds, the one timestamp format of the store. */
export function nowIso(clock: () => number = Date.now): string {
  return new Date(clock()).toISOString();
}

/**
 * Builds "SET a = @a, b = @b" from the keys actually present in a patch, restricted to
 * an allow-list so that a caller can never name a column it should not write.
 */
export function setClause<T extends object>(
  patch: Partial<T>,
  allowed: readonly (keyof T & string)[],
): { sql: string; params: Record<string, unknown> } {
  const keys = allowed.filter((k) => patch[k] !== undefined);
  const params: Record<string, unknown> = {};
  for (const k of keys) {
    const v = patch[k];
    params[k] = typeof v === "boolean" ? (v ? 1 : 0) : v;
  }
  return { sql: keys.map((k) => `${k} = @${k}`).join(", "), params };
}
