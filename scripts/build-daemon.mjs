#!/usr/bin/env node
// Bundles the compiled daemon (dist/daemon/main.js, after tsc) with the pure-JavaScript
// packages it imports into one file, dist/bootfleetd.mjs, which bin/bootfleetd.js runs.
//
//   node scripts/build-daemon.mjs
//
// Why: Node 20 loads an ES module graph file by file (resolve, stat, read, parse, link: ~570
// files for the daemon) and keeps every module's source text in the heap. One file with
// whitespace removed starts in half the CPU and holds ~3 MB less heap (bench/footprint).
// Node 22's module compile cache would be the other answer; the runtime here is Node 20.
//
// What stays outside (loaded from node_modules as before): native addons, packages that
// find files of their own beside their code (pino starts its transports as worker files;
// swagger-ui-dist is located with require.resolve), and the packages the daemon loads on
// first use (src/fleet/system.ts, src/api/auth/tokens.ts, src/images/upload.ts), which would
// otherwise be loaded at start again.
import { readFile, stat } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(repo, "dist");
const outfile = join(dist, "bootfleetd.mjs");

const EXTERNAL = [
  // native addons
  "better-sqlite3",
  "raw-socket",
  "unix-dgram",
  // files of their own beside their code
  "pino",
  "pino-pretty",
  "swagger-ui-dist",
  // loaded on first use
  "systeminformation",
  "jose",
  "busboy",
];

/**
 * dist/ modules find files relative to themselves (`new URL("../web/", import.meta.url)`,
 * `import.meta.dirname`): each keeps its own location inside the bundle, as a path relative
 * to the bundle, which sits in dist/ beside them.
 */
const ownLocation = {
  name: "own-import-meta",
  setup(b) {
    b.onLoad({ filter: /\.js$/ }, async (args) => {
      if (!args.path.startsWith(`${dist}/`)) return undefined;
      const text = await readFile(args.path, "utf8");
      if (!text.includes("import.meta")) return { contents: text, loader: "js" };
      const rel = JSON.stringify(`./${relative(dist, args.path)}`);
      const contents = text
        .replaceAll("import.meta.url", `__bfModuleUrl(${rel})`)
        .replaceAll("import.meta.dirname", `__bfModuleDir(${rel})`);
      if (contents.includes("import.meta")) {
        throw new Error(`${args.path}: an import.meta use the bundle cannot relocate`);
      }
      return { contents, loader: "js", resolveDir: dirname(args.path) };
    });
  },
};

// CommonJS packages inside an ES module bundle need `require` (for Node's built-ins); the
// helpers give each dist/ module its own location (above).
const banner = [
  'import { createRequire as __bfCreateRequire } from "node:module";',
  'import { dirname as __bfDirname } from "node:path";',
  'import { fileURLToPath as __bfFileURLToPath } from "node:url";',
  "const require = __bfCreateRequire(import.meta.url);",
  "const __bfModuleUrl = (rel) => new URL(rel, import.meta.url).href;",
  "const __bfModuleDir = (rel) => __bfDirname(__bfFileURLToPath(__bfModuleUrl(rel)));",
].join("\n");

const result = await build({
  entryPoints: [join(dist, "daemon/main.js")],
  outfile,
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  external: EXTERNAL,
  // Names are kept (no identifier minification): stack traces and error names read the same.
  minifyWhitespace: true,
  minifySyntax: true,
  banner: { js: banner },
  // ws looks for two optional native addons (bufferutil, utf-8-validate) at import, in try
  // blocks: neither is a dependency, and each failed look-up walks every node_modules folder
  // up to / (~15 ms of a start). ws's own switches say "do not look".
  define: {
    "process.env.WS_NO_BUFFER_UTIL": '"1"',
    "process.env.WS_NO_UTF_8_VALIDATE": '"1"',
  },
  plugins: [ownLocation],
  metafile: true,
  logLevel: "warning",
});

const { size: bytes } = await stat(outfile);
const inputs = Object.keys(result.metafile.inputs).length;
process.stdout.write(
  `dist/bootfleetd.mjs: ${(bytes / 1024).toFixed(0)} KiB from ${inputs} modules\n`,
);
