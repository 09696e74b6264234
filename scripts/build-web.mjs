#!/usr/bin/env node
// Builds the web dashboard: src/web (Preact + TSX) → dist/web/index.html and
// dist/web/assets/<name>-<hash>.<ext>, one JavaScript and one CSS file. The daemon serves
// these files as they are (src/api/web.ts); nothing is fetched from anywhere at run time.
//
//   node scripts/build-web.mjs [--no-typecheck]
//
// Type-checks the client first (its own tsconfig: DOM library, Preact's JSX), since
// esbuild only strips types. Prints one line with the size of each file.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { basename, dirname, extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..");
const src = join(repo, "src/web");
const out = join(repo, "dist/web");
const assets = join(out, "assets");

if (!process.argv.includes("--no-typecheck")) {
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  execFileSync(process.execPath, [tsc, "-p", join(src, "tsconfig.json")], { stdio: "inherit" });
}

// A stale bundle with an old hash must not ship beside the new one.
rmSync(out, { recursive: true, force: true });
mkdirSync(assets, { recursive: true });

const result = await build({
  entryPoints: { app: join(src, "main.tsx"), style: join(src, "style.css") },
  bundle: true,
  minify: true,
  format: "esm",
  platform: "browser",
  target: ["es2022"],
  jsx: "automatic",
  jsxImportSource: "preact",
  outdir: assets,
  entryNames: "[name]-[hash]",
  metafile: true,
  legalComments: "none",
  charset: "utf8",
  logLevel: "warning",
});

const built = Object.keys(result.metafile.outputs).map((p) => basename(p));
const named = (prefix, ext) => {
  const f = built.find((b) => b.startsWith(`${prefix}-`) && extname(b) === ext);
  if (!f) throw new Error(`build-web: esbuild wrote no ${prefix}*${ext}`);
  return f;
};

// Static files: content-hashed names too, so every asset can be cached for good.
const statics = {};
for (const file of ["favicon.svg"]) {
  const body = readFileSync(join(src, file));
  const hash = createHash("sha256").update(body).digest("hex").slice(0, 10);
  const name = `${basename(file, extname(file))}-${hash}${extname(file)}`;
  writeFileSync(join(assets, name), body);
  statics[file] = name;
}

const html = readFileSync(join(src, "index.html"), "utf8")
  .replaceAll("%APP_JS%", `/assets/${named("app", ".js")}`)
  .replaceAll("%STYLE_CSS%", `/assets/${named("style", ".css")}`)
  .replaceAll("%FAVICON%", `/assets/${statics["favicon.svg"]}`);
if (/%[A-Z_]+%/.test(html)) throw new Error("build-web: index.html has an unknown placeholder");
writeFileSync(join(out, "index.html"), html);

const kb = (n) => `${(n / 1024).toFixed(1)} KiB`;
const sizes = [...built, ...Object.values(statics)].sort().map((f) => {
  const body = readFileSync(join(assets, f));
  return `${f} ${kb(body.length)} (gzip ${kb(gzipSync(body, { level: 9 }).length)})`;
});
console.log(`dist/web: ${sizes.join(", ")}`);
