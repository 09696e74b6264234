/** Columns aligned for a terminal; cells are one line (control characters shown as ?). */
export function table(headers: string[], rows: unknown[][]): string {
  const cell = (v: unknown) =>
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is replaced
    v === null || v === undefined ? "-" : String(v).replace(/[\u0000-\u001f\u007f]/g, "?");
  const text = rows.map((r) => r.map(cell));
  const widths = headers.map((h, i) => Math.max(h.length, ...text.map((r) => r[i]?.length ?? 0)));
  const line = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i]!))
      .join("  ")
      .trimEnd();
  return `${[line(headers), ...text.map(line)].join("\n")}\n`;
}

/** A progress bar of `width` cells for 0..100. */
export function bar(percent: number, width = 30): string {
  const p = Math.max(0, Math.min(100, Number.isFinite(percent) ? percent : 0));
  const full = Math.round((p / 100) * width);
  return `[${"#".repeat(full)}${".".repeat(width - full)}] ${p.toFixed(0).padStart(3)}%`;
}
