/**
 * Polls `probe` until it gives a value (not undefined) or `timeoutMs` passes. A guest step
 * under TCG takes seconds to minutes, so the tests wait on what they can observe rather than
 * sleep; the error names what was awaited, the last failure of the probe and `detail()`.
 */
export async function waitUntil<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs: number,
  opts: { detail?: () => string; intervalMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}${opts.detail ? `\n${opts.detail()}` : ""}`,
      );
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 1000));
  }
}
