// Import rules between bootfleet's rooms (docs/ARCHITECTURE.md explains them).
// Run by `npm run lint`: `depcruise src bin`. Tests are not importers here (they may
// import anything); node_modules is seen only as a target.
const { existsSync } = require("node:fs");

/** Domain rooms: they own a piece of the problem and know nothing of the edges. */
const DOMAIN =
  "^src/(netboot|iscsi|images|jobs|events|metrics|power|diskspace|fleet|store|host|lib)/";
/** What every room may use: leaf files at the top of src (version.ts) and a shared util. */
const SHARED = "^src/([^/]+\\.ts$|lib/)";

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "no-circular",
      severity: "error",
      comment:
        "An import cycle: two modules that need each other are one module, or need a third (a leaf such as api/types.ts) that both import.",
      from: {},
      to: { circular: true },
    },
    {
      name: "daemon-is-the-top",
      severity: "error",
      comment:
        "src/daemon composes the rooms; only it and bin/ import it. A room that needs a setting or a host fact takes it as a parameter.",
      from: { pathNot: "^(src/daemon/|bin/)" },
      to: { path: "^src/daemon/" },
    },
    {
      name: "config-is-for-composition",
      severity: "error",
      comment:
        "src/config (the configuration file's schema and loader) is read by the daemon and the shell; a room declares its own settings and the daemon maps the configuration onto them.",
      from: { pathNot: "^(src/daemon/|src/cli/|src/config/|bin/)" },
      to: { path: "^src/config/" },
    },
    {
      name: "store-is-a-leaf",
      severity: "error",
      comment: "src/store (SQLite) imports no other room: rooms call the store, never the reverse.",
      from: { path: "^src/store/" },
      to: { path: "^src/", pathNot: ["^src/store/", SHARED] },
    },
    {
      name: "host-is-a-leaf",
      severity: "error",
      comment: "src/host (interfaces, neighbours, privileges, exec) imports no other room.",
      from: { path: "^src/host/" },
      to: { path: "^src/", pathNot: ["^src/host/", SHARED] },
    },
    {
      name: "lib-is-a-leaf",
      severity: "error",
      comment:
        "src/lib holds small tools (a keyed lock, error text) that import nothing of the project.",
      from: { path: "^src/lib/" },
      to: { path: "^src/", pathNot: "^src/lib/" },
    },
    {
      name: "domain-not-to-edge",
      severity: "error",
      comment:
        "A domain room does not import the edges (src/api, src/cli, src/web): it throws its own errors and the edge maps them.",
      from: { path: DOMAIN },
      to: { path: "^src/(api|cli|web)/" },
    },
    {
      name: "sql-only-in-store",
      severity: "error",
      comment:
        "better-sqlite3 is used by src/store only; other rooms ask the store's repositories.",
      from: { pathNot: "^src/store/" },
      to: { path: "node_modules/better-sqlite3/" },
    },
    {
      name: "not-to-unresolvable",
      severity: "error",
      comment: "An import that resolves to nothing.",
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "(^|/)(test|dist|node_modules)/" },
    // Type-only imports are directions too: a type from a room is a dependency on it.
    tsPreCompilationDeps: true,
    ...(existsSync("tsconfig.json") ? { tsConfig: { fileName: "tsconfig.json" } } : {}),
    enhancedResolveOptions: {
      exportsFields: ["exports"],
      conditionNames: ["import", "require", "node", "default", "types"],
      extensions: [".ts", ".js", ".cjs", ".mjs", ".json", ".d.ts"],
    },
  },
};
