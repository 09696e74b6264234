import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

/**
 * The host's apt sources for SUITE, SUITE-updates and SUITE-security, component main, as
 * one-line entries for mmdebstrap: an image (a recipe of images/, the test guest) installs
 * from the same mirror as the host, often the only one it can reach. Reads sources.list and sources.list.d/*.list and
 * *.sources (deb822); other repositories (a vendor's "bookworm stable") are left out.
 */
export function hostSources(suite: string, aptDir = "/etc/apt"): string[] {
  const wanted = new Set([suite, `${suite}-updates`, `${suite}-security`]);
  const entries: { uri: string; suite: string }[] = [];
  const add = (types: string[], uris: string[], suites: string[], comps: string[]) => {
    if (!types.includes("deb") || !comps.includes("main")) return;
    for (const u of uris) {
      for (const s of suites)
        if (wanted.has(s)) entries.push({ uri: u.replace(/\/+$/, ""), suite: s });
    }
  };
  const files: string[] = [];
  if (existsSync(join(aptDir, "sources.list"))) files.push(join(aptDir, "sources.list"));
  const d = join(aptDir, "sources.list.d");
  if (existsSync(d)) {
    for (const f of readdirSync(d).sort()) {
      if (f.endsWith(".list") || f.endsWith(".sources")) files.push(join(d, f));
    }
  }
  for (const f of files) {
    const text = readFileSync(f, "utf8");
    if (f.endsWith(".sources")) {
      for (const para of text.split(/\n\s*\n/)) {
        const fields = new Map<string, string>();
        let key = "";
        for (const line of para.split("\n")) {
          if (line.startsWith("#")) continue;
          const m = /^([A-Za-z-]+):\s*(.*)$/.exec(line);
          if (m?.[1]) {
            key = m[1].toLowerCase();
            fields.set(key, m[2] ?? "");
          } else if (key && /^\s/.test(line)) {
            fields.set(key, `${fields.get(key)} ${line.trim()}`);
          }
        }
        if ((fields.get("enabled") ?? "yes").trim().toLowerCase() === "no") continue;
        const list = (k: string) => (fields.get(k) ?? "").split(/\s+/).filter(Boolean);
        add(list("types"), list("uris"), list("suites"), list("components"));
      }
    } else {
      for (const raw of text.split("\n")) {
        const line = raw
          .replace(/#.*/, "")
          .replace(/\[[^\]]*\]/, " ")
          .trim();
        const [type, uri, s, ...comps] = line.split(/\s+/);
        if (type && uri && s) add([type], [uri], [s], comps);
      }
    }
  }
  const order = [suite, `${suite}-updates`, `${suite}-security`];
  entries.sort((a, b) => order.indexOf(a.suite) - order.indexOf(b.suite));
  const lines = [...new Set(entries.map((e) => `deb ${e.uri} ${e.suite} main`))];
  if (!lines.some((l) => l.endsWith(` ${suite} main`))) {
    throw new Error(
      `no apt source for "${suite} main" in ${aptDir}/sources.list{,.d}: images are built ` +
        "from the host's Debian mirror",
    );
  }
  return lines;
}
