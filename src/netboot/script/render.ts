import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { SCRIPT_KINDS, type ScriptData, type ScriptKind, VIEW_BUILDERS } from "./kinds.js";
import { parseTemplate, renderTemplate, type Template, TemplateError } from "./template.js";

/** One parsed template per kind, read from `<dir>/<kind>.ipxe`. */
export type ScriptTemplates = { readonly [K in ScriptKind]: Template };

/**
 * Reads and parses every kind's template. Fails at once when one is missing or malformed,
 * so a broken install shows up at daemon start and not at a client's boot.
 */
export async function loadTemplates(dir: string): Promise<ScriptTemplates> {
  const entries = await Promise.all(
    SCRIPT_KINDS.map(async (kind) => {
      const file = join(dir, `${kind}.ipxe`);
      const source = await readFile(file, "utf8");
      return [kind, parseTemplate(file, source)] as const;
    }),
  );
  return Object.fromEntries(entries) as ScriptTemplates;
}

/**
 * Renders the boot script of one kind. Deterministic: the same data gives the same text.
 * Throws ScriptValueError (naming the field) when a value cannot be put in a script.
 */
export function renderScript<K extends ScriptKind>(
  templates: ScriptTemplates,
  kind: K,
  data: ScriptData[K],
): string {
  const template = templates[kind];
  if (template === undefined) throw new TemplateError(String(kind), "unknown script kind");
  const view = VIEW_BUILDERS[kind](data);
  const text = renderTemplate(template, view);
  // iPXE treats a download as a script only with this magic; anything else would be
  // tried as an executable image.
  if (!text.startsWith("#!ipxe")) {
    throw new TemplateError(template.name, 'rendered script does not start with "#!ipxe"');
  }
  return text;
}
