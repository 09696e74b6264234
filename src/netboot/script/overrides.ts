import { existsSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { basename, extname, join } from "node:path";
import { type FSWatcher, watch } from "chokidar";
import type { Logger } from "pino";
import { SCRIPT_KINDS, type ScriptData, type ScriptKind } from "./kinds.js";
import { renderScript, type ScriptTemplates } from "./render.js";
import { parseTemplate, type Template } from "./template.js";

/**
 * Data each kind is rendered from while an override is checked: every optional part both
 * present and absent, so every section of a template is rendered at least once and a
 * misspelt value name is found before a PC would meet it.
 */
const SAMPLES: { [K in ScriptKind]: ScriptData[K][] } = {
  sanboot: [
    {
      name: "PC 01",
      hostname: "pc-01",
      initiatorIqn: "iqn.2024-01.io.bootfleet:pc-01",
      chap: { username: "pc-01", password: "secret-1" },
      mutualChap: { username: "target", password: "secret-2" },
      system: { server: "192.0.2.1", port: 3260, lun: 0, targetIqn: "iqn.2024-01.io.bootfleet:t1" },
      extraDisks: [{ server: "192.0.2.1", lun: 1, targetIqn: "iqn.2024-01.io.bootfleet:t2" }],
      retryTimeoutMs: 30_000,
    },
    {
      name: "-",
      hostname: "",
      initiatorIqn: "iqn.2024-01.io.bootfleet:pc-02",
      chap: { username: "pc-02", password: "secret-3" },
      system: { server: "192.0.2.1", lun: 0, targetIqn: "iqn.2024-01.io.bootfleet:t3" },
    },
  ],
  menu: [
    {
      title: "bootfleet: PC 01",
      items: [
        { label: "Windows", url: "http://192.0.2.1/boot/a/b?target=1" },
        { label: "Linux", url: "http://192.0.2.1/boot/a/b?target=2" },
      ],
      defaultIndex: 1,
      timeoutMs: 5000,
    },
    { title: "", items: [{ label: "", url: "http://192.0.2.1/boot/a/b" }], timeoutMs: 0 },
  ],
  local: [{ name: "PC 01" }, { name: "" }],
  kernel: [
    {
      name: "PC 01",
      kernelUrl: "http://192.0.2.1/boot/files/1/vmlinuz",
      initrds: [{ url: "http://192.0.2.1/boot/files/1/initrd.img", name: "initrd.img" }],
      cmdline: "console=ttyS0",
      retryTimeoutMs: 30_000,
    },
    { name: "", kernelUrl: "http://192.0.2.1/boot/files/1/vmlinuz" },
  ],
  discovery: [
    {
      mac: "52:54:00:12:34:56",
      scriptUrl: "http://192.0.2.1/boot/525400123456/token",
      retrySeconds: 15,
      message: "waiting",
    },
    {
      mac: "52:54:00:12:34:56",
      scriptUrl: "http://192.0.2.1/boot/525400123456/token",
      message: "",
    },
  ],
  custom: [{ script: "#!ipxe\necho custom\n" }],
};

/**
 * A site's template for one kind, or why it is refused: it must parse, and render every
 * sample of its kind (so it names only values the kind has, inserts admin-written code
 * only where the kind has some, and starts with "#!ipxe"). Values still go through the
 * renderer's checks at every boot: a template decides where a value goes, never how it
 * is escaped.
 */
export function checkOverride<K extends ScriptKind>(
  builtIn: ScriptTemplates,
  kind: K,
  file: string,
  source: string,
): Template {
  const template = parseTemplate(file, source);
  const trial = { ...builtIn, [kind]: template } as ScriptTemplates;
  for (const sample of SAMPLES[kind]) renderScript(trial, kind, sample);
  return template;
}

export interface TemplateOverridesDeps {
  /** The built-in templates: what a kind without a (valid) override uses. */
  builtIn: ScriptTemplates;
  /** [netboot] templates_dir: <kind>.ipxe files. */
  dir: string;
  log: Logger;
  /** A file was refused (message: the parse or render error), or became fine (null). */
  onProblem?(file: string, message: string | null): void;
  /** How long a changed file must hold still before it is read (an editor's write). */
  settleMs?: number;
}

/**
 * The boot script templates in use: the built-in ones, each replaced by the site's
 * override in templates_dir while that file is valid. The folder is watched: a changed
 * file is checked and takes effect at the next script served; a file that does not pass
 * is refused with a log line and the previous template (override or built-in) kept; a
 * removed file brings the built-in back.
 */
export class TemplateOverrides {
  readonly #d: TemplateOverridesDeps;
  readonly #live: Record<ScriptKind, Template>;
  #watcher: FSWatcher | undefined;

  constructor(deps: TemplateOverridesDeps) {
    this.#d = deps;
    this.#live = { ...deps.builtIn };
  }

  /**
   * What the boot routes render with. The same object for the daemon's life: a kind's
   * entry is replaced in it, so the next script uses the new template.
   */
  get templates(): ScriptTemplates {
    return this.#live;
  }

  /** Reads the overrides present now (before any script is served), then watches. */
  async start(): Promise<void> {
    const d = this.#d;
    if (!existsSync(d.dir)) {
      d.log.warn({ dir: d.dir }, "[netboot] templates_dir does not exist: built-in templates");
      return;
    }
    for (const name of await readdir(d.dir)) await this.#load(join(d.dir, name));
    const settle = d.settleMs ?? 300;
    const watcher = watch(d.dir, {
      depth: 0,
      ignoreInitial: true,
      ignored: (path) => path !== d.dir && basename(path).startsWith("."),
      awaitWriteFinish: { stabilityThreshold: settle, pollInterval: Math.max(20, settle / 4) },
    });
    this.#watcher = watcher;
    watcher.on("add", (path) => void this.#load(path));
    watcher.on("change", (path) => void this.#load(path));
    watcher.on("unlink", (path) => this.#remove(path));
    watcher.on("error", (err) =>
      d.log.warn({ dir: d.dir, err: String(err) }, "template folder watch error"),
    );
    await new Promise<void>((resolve) => watcher.once("ready", () => resolve()));
    d.log.info({ dir: d.dir }, "watching boot script template overrides");
  }

  async close(): Promise<void> {
    await this.#watcher?.close();
  }

  #kindOf(path: string): ScriptKind | undefined {
    if (extname(path) !== ".ipxe") return undefined;
    const kind = basename(path, ".ipxe");
    if ((SCRIPT_KINDS as readonly string[]).includes(kind)) return kind as ScriptKind;
    this.#d.log.warn(
      { file: path, kinds: SCRIPT_KINDS },
      "template override ignored: its name is no script kind",
    );
    return undefined;
  }

  async #load(path: string): Promise<void> {
    const d = this.#d;
    const kind = this.#kindOf(path);
    if (!kind) return;
    try {
      const source = await readFile(path, "utf8");
      this.#live[kind] = checkOverride(d.builtIn, kind, path, source);
      d.log.info({ file: path, kind }, "boot script template override loaded");
      d.onProblem?.(path, null);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      d.log.error(
        { file: path, kind, err: message },
        "boot script template override refused: the previous template stays",
      );
      d.onProblem?.(path, message);
    }
  }

  #remove(path: string): void {
    const kind = this.#kindOf(path);
    if (!kind) return;
    this.#live[kind] = this.#d.builtIn[kind];
    this.#d.log.info({ file: path, kind }, "template override removed: the built-in one is used");
    this.#d.onProblem?.(path, null);
  }
}
