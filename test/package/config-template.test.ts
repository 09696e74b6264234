// The conffile /etc/bootfleet/bootfleetd.toml: every schema key, commented out with the
// default it shows, and each shown default true.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseToml } from "smol-toml";
import t from "tap";
import * as z from "zod";
import { configSchema, defaultConfig, loadConfig } from "../../src/config/config.js";
import { COMPUTED_MARKER, renderConfigTemplate } from "../../src/daemon/config-template.js";
import type { Privileges } from "../../src/host/privileges.js";
import { tempDir } from "../helpers/daemon.js";

const root: Privileges = { isRoot: true, canBindLowPorts: true, canUseRawSockets: true };
const user: Privileges = { isRoot: false, canBindLowPorts: false, canUseRawSockets: false };
// A machine with a default route, so the network defaults are not empty.
const detect = { detectInterface: () => "lan0", detectAddress: () => "10.99.0.1" };

const dir = tempDir(t, "bf-conffile-");
const template = renderConfigTemplate();

function load(text: string, privileges: Privileges = root) {
  const path = join(dir, `c${Math.random().toString(36).slice(2)}.toml`);
  writeFileSync(path, text);
  return loadConfig({ path, env: {}, privileges, cwd: "/srv/work", ...detect }).config;
}
const defaults = (privileges: Privileges = root) => load("", privileges);

/** The schema's keys, enumerated here rather than through the template module. */
type SchemaKey = { section: string | undefined; key: string };
const schemaKeys: SchemaKey[] = Object.entries(configSchema.shape).flatMap(([k, v]): SchemaKey[] =>
  v instanceof z.ZodObject
    ? Object.keys(v.shape).map((key) => ({ section: k, key }))
    : [{ section: undefined, key: k }],
);

interface KeyLine {
  section: string | undefined;
  key: string;
  line: number;
  computed: boolean;
}
/** `# key = value` lines with the [section] they are under. */
function keyLines(text: string): KeyLine[] {
  const out: KeyLine[] = [];
  let section: string | undefined;
  text.split("\n").forEach((l, line) => {
    const header = /^\[([a-z_]+)\]$/.exec(l);
    if (header) section = header[1];
    const m = /^# ([a-z_0-9]+) = /.exec(l);
    if (m) out.push({ section, key: m[1]!, line, computed: l.includes(COMPUTED_MARKER) });
  });
  return out;
}

t.test("loaded as it is, the conffile gives the embedded defaults", async (t) => {
  t.same(
    parseToml(template),
    Object.fromEntries(
      Object.entries(configSchema.shape)
        .filter(([, v]) => v instanceof z.ZodObject)
        .map(([k]) => [k, {}]),
    ),
    "valid TOML holding only empty [section] tables",
  );
  t.same(load(template), defaults(), "as root (the packaged daemon)");
  t.same(load(template, user), defaults(user), "and as a normal user");
});

t.test("every schema key is in the conffile, under its section, described", async (t) => {
  const lines = template.split("\n");
  const found = keyLines(template);
  for (const { section, key } of schemaKeys) {
    const name = section ? `[${section}] ${key}` : key;
    const hits = found.filter((f) => f.section === section && f.key === key);
    t.equal(hits.length, 1, `${name} appears once`);
    const above = lines[(hits[0]?.line ?? 0) - 1] ?? "";
    t.match(above, /^# [A-Z"a-z].{9,}$/, `${name} has a one-line description above it`);
    t.notMatch(above, /^# [a-z_0-9]+ = /, `${name}'s description is not another key`);
  }
  t.equal(found.length, schemaKeys.length, "and no key the schema does not have");
});

t.test("each shown default is the default", async (t) => {
  const lines = template.split("\n");
  const found = keyLines(template);
  const literal = found.filter((f) => !f.computed);
  const uncommented = [...lines];
  for (const f of literal) uncommented[f.line] = lines[f.line]!.replace(/^# /, "");
  t.same(
    load(uncommented.join("\n")),
    defaults(),
    `uncommenting the ${literal.length} literal defaults changes nothing`,
  );

  // Only a key whose embedded default is an empty placeholder, filled in at start, may
  // show an example with its rule instead of a literal.
  const embedded = defaultConfig(root) as Record<string, unknown>;
  for (const f of found.filter((x) => x.computed)) {
    const value = f.section
      ? (embedded[f.section] as Record<string, unknown>)[f.key]
      : embedded[f.key];
    t.ok(
      value === "" || (Array.isArray(value) && value.length === 0),
      `${f.section ? `${f.section}.` : ""}${f.key} is computed at start (embedded ${JSON.stringify(value)})`,
    );
    t.match(lines[f.line]!, new RegExp(`${COMPUTED_MARKER} \\S`), "and says by what rule");
  }

  // The examples are valid values: uncommenting every key still loads.
  const all = lines.map((l) => (/^# [a-z_0-9]+ = /.test(l) ? l.slice(2) : l)).join("\n");
  const config = load(all);
  t.equal(config.netboot.interfaces.length, 1, "with the example interface");
  t.equal(config.images_dir, "/var/lib/bootfleet/images", "a derived path shows its default");
});
