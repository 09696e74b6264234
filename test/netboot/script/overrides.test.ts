import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import t from "tap";
import { SCRIPT_KINDS } from "../../../src/netboot/script/kinds.js";
import { checkOverride } from "../../../src/netboot/script/overrides.js";
import { loadTemplates } from "../../../src/netboot/script/render.js";

// The check an override must pass is one the built-in templates pass: a site that copies
// a built-in file into templates_dir to edit it starts from something accepted.
const IPXE_DIR = resolve(import.meta.dirname, "../../../ipxe");

t.test("every built-in template passes the override check", async (t) => {
  const builtIn = await loadTemplates(IPXE_DIR);
  for (const kind of SCRIPT_KINDS) {
    const file = join(IPXE_DIR, `${kind}.ipxe`);
    t.doesNotThrow(() => checkOverride(builtIn, kind, file, readFileSync(file, "utf8")), kind);
  }
});

t.test("a section the samples leave out is still checked", async (t) => {
  const builtIn = await loadTemplates(IPXE_DIR);
  // {{^mutual}} renders only without mutual CHAP, {{#extraDisks}} only with extra disks.
  t.throws(
    () =>
      checkOverride(
        builtIn,
        "sanboot",
        "s.ipxe",
        "#!ipxe\n{{^mutual}}\necho {{typo}}\n{{/mutual}}\n",
      ),
    /no value named "typo"/,
  );
  t.throws(
    () =>
      checkOverride(
        builtIn,
        "sanboot",
        "s.ipxe",
        "#!ipxe\n{{#extraDisks}}\necho {{typo}}\n{{/extraDisks}}\n",
      ),
    /no value named "typo"/,
  );
});
