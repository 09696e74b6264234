// The .deb as dpkg sees it: control fields, file list, conffile, maintainer scripts, and
// the bundled runtime running the daemon from the extracted tree. Needs no root.
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { INSTALLED_RECIPES_DIR, loadConfig, printableConfig } from "../../src/config/config.js";
import { renderConfigTemplate } from "../../src/daemon/config-template.js";
import { adjustForPrivileges } from "../../src/daemon/unprivileged.js";
import { detectPrivileges } from "../../src/host/privileges.js";
import { recipeHash } from "../../src/images/recipes/hash.js";
import { loadRecipe } from "../../src/images/recipes/manifest.js";
import { tempDir } from "../helpers/daemon.js";
import { freshDeb, REPO, VERSION } from "./fresh-deb.js";

const CONFFILE = "/etc/bootfleet/bootfleetd.toml";
const LIB = "usr/lib/bootfleet";

const dpkgDeb = (...args: string[]) =>
  execFileSync("dpkg-deb", args, { encoding: "utf8", maxBuffer: 64 << 20 });

const deb = freshDeb(t);
t.comment(`package: ${deb.how}`);

interface Entry {
  mode: string;
  owner: string;
  path: string;
}
/** `dpkg-deb -c` lines: "-rwxr-xr-x root/root 157 2026-11-23 06:00 ./usr/bin/bootfleetd". */
const entries: Entry[] = dpkgDeb("-c", deb.path)
  .trimEnd()
  .split("\n")
  .map((line) => {
    const [mode, owner, , , , ...rest] = line.split(/\s+/);
    return {
      mode: mode!,
      owner: owner!,
      path: rest.join(" ").replace(/^\.\//, "").split(" -> ")[0]!,
    };
  });
const byPath = new Map(entries.map((e) => [e.path.replace(/\/$/, ""), e]));

t.test("control fields", async (t) => {
  const field = (name: string) => dpkgDeb("-f", deb.path, name).trim();
  t.equal(field("Package"), "bootfleet");
  t.equal(field("Version"), VERSION, "the version of package.json");
  t.equal(field("Architecture"), "amd64");
  t.equal(field("Section"), "net");
  t.equal(field("Priority"), "optional");
  t.match(field("Maintainer"), /^.+ <[^@\s]+@[^>\s]+>$/);
  t.match(field("Installed-Size"), /^\d+$/);
  const depends = field("Depends").split(/,\s*/);
  t.ok(depends.includes("ipxe"), `Depends has ipxe: ${depends.join(", ")}`);
  t.ok(depends.includes("targetcli-fb | tgt"), "Depends has targetcli-fb | tgt");
  t.ok(
    depends.some((d) => /^libc6 \(>= 2\.\d+\)$/.test(d)),
    "Depends has libc6 with the version the bundled binaries need",
  );
  t.notOk(
    depends.some((d) => /\bnodejs\b/.test(d)),
    "no nodejs dependency: the runtime is bundled",
  );
  const recommends = field("Recommends").split(/,\s*/);
  for (const r of ["qemu-utils", "xfsprogs", "lvm2"])
    t.ok(recommends.includes(r), `Recommends ${r}`);
  t.match(field("Description"), /diskless/);
});

t.test("files: the layout, root-owned, without development dependencies", async (t) => {
  for (const path of [
    "usr/bin/bootfleetd",
    "usr/bin/bootfleet",
    "lib/systemd/system/bootfleetd.service",
    CONFFILE.slice(1),
    `${LIB}/bin/bootfleetd.js`,
    `${LIB}/bin/bootfleet.js`,
    `${LIB}/dist/daemon/main.js`,
    `${LIB}/dist/bootfleetd.mjs`,
    `${LIB}/dist/cli/main.js`,
    `${LIB}/dist/web/index.html`,
    `${LIB}/ipxe/sanboot.ipxe`,
    `${LIB}/package.json`,
    `${LIB}/node/bin/node`,
    `${LIB}/node_modules/better-sqlite3/build/Release/better_sqlite3.node`,
    `${LIB}/node_modules/raw-socket/build/Release/raw.node`,
    `${LIB}/node_modules/unix-dgram/build/Release/unix_dgram.node`,
    "usr/share/doc/bootfleet/README.md",
    "usr/share/doc/bootfleet/copyright",
    "usr/share/lintian/overrides/bootfleet",
    "usr/share/bootfleet/images/README.md",
    "usr/share/bootfleet/images/debian-12/recipe.json",
    "usr/share/bootfleet/images/debian-12/files/grub.cfg",
  ]) {
    t.ok(byPath.has(path), `has /${path}`);
  }
  t.ok(
    byPath.has("usr/share/doc/bootfleet/changelog.gz") ||
      byPath.has("usr/share/doc/bootfleet/changelog.Debian.gz"),
    "has a changelog",
  );
  for (const exe of [
    "usr/bin/bootfleetd",
    "usr/bin/bootfleet",
    `${LIB}/node/bin/node`,
    "usr/share/bootfleet/images/debian-12/10-rootfs.sh",
  ]) {
    t.equal(byPath.get(exe)?.mode, "-rwxr-xr-x", `/${exe} is executable`);
  }
  t.same(
    entries.filter((e) => e.owner !== "root/root").map((e) => `${e.owner} ${e.path}`),
    [],
    "every file is owned by root/root",
  );
  t.same(
    entries.filter((e) => /w/.test(e.mode.slice(4))).map((e) => `${e.mode} ${e.path}`),
    [],
    "nothing writable by group or others",
  );

  const pkg = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as {
    dependencies: Record<string, string>;
    devDependencies: Record<string, string>;
  };
  const modules = entries.filter((e) => e.path.startsWith(`${LIB}/node_modules/`));
  for (const name of Object.keys(pkg.devDependencies)) {
    t.notOk(
      modules.some((e) => e.path.startsWith(`${LIB}/node_modules/${name}/`)),
      `no devDependency ${name}`,
    );
  }
  for (const name of ["typescript", "tap", "@biomejs/biome", "tsx", "esbuild"]) {
    t.notOk(byPath.has(`${LIB}/node_modules/${name}`), `no ${name}`);
  }
  for (const name of Object.keys(pkg.dependencies)) {
    t.ok(byPath.has(`${LIB}/node_modules/${name}/package.json`), `dependency ${name}`);
  }
  t.same(
    modules
      .filter((e) =>
        /\/(obj\.target|\.deps|obj)\/|\.(o|a|mk|gypi?)$|\/Makefile$|test_extension\.node$/.test(
          e.path,
        ),
      )
      .map((e) => e.path),
    [],
    "no native build intermediates",
  );
  t.notOk(
    entries.some((e) => e.path.startsWith(`${LIB}/dist/`) && e.path.endsWith(".map")),
    "no source maps (their sources are not shipped)",
  );
  const swagger = `${LIB}/node_modules/swagger-ui-dist/`;
  t.same(
    entries
      .filter((e) => e.path.startsWith(swagger) && !e.path.endsWith("/"))
      .map((e) => e.path.slice(swagger.length))
      .sort(),
    [
      "LICENSE",
      "NOTICE",
      "absolute-path.js",
      "index.js",
      "package.json",
      "swagger-ui-bundle.js",
      "swagger-ui.css",
    ],
    "of swagger-ui-dist, only what /api/docs serves (no other bundles, no source maps)",
  );
});

t.test("conffile and maintainer scripts", async (t) => {
  t.same(
    dpkgDeb("-I", deb.path, "conffiles").trim().split("\n"),
    [CONFFILE],
    "conffiles lists the configuration file",
  );
  const control = tempDir(t, "bf-deb-control-");
  dpkgDeb("-e", deb.path, control);
  for (const script of ["postinst", "prerm", "postrm"]) {
    const path = join(control, script);
    t.equal(statSync(path).mode & 0o777, 0o755, `${script} is executable`);
    const text = readFileSync(path, "utf8");
    t.match(text, /^#!\/bin\/sh\n/, `${script} is a POSIX shell script`);
    t.match(text, /^set -e$/m, `${script} stops at the first failing command`);
    const check = spawnSync("sh", ["-n", path], { encoding: "utf8" });
    t.equal(check.status, 0, `sh -n ${script}: ${check.stderr}`);
  }
  const postinst = readFileSync(join(control, "postinst"), "utf8");
  t.match(postinst, /deb-systemd-helper enable/, "postinst enables the service");
  t.match(postinst, /deb-systemd-invoke "\$action"/, "postinst starts or restarts it");
  t.match(postinst, /install -d -m 0750 -o root -g root "\$DATA_DIR"/, "data_dir is root's only");
  t.notMatch(
    postinst,
    /cat\s+"?\$PASSWORD_FILE"?\s*($|[;|&>])/m,
    "postinst never prints the password",
  );
  const prerm = readFileSync(join(control, "prerm"), "utf8");
  t.match(prerm, /\[ "\$1" = remove \]/, "prerm stops only on remove (upgrades restart)");
  const postrm = readFileSync(join(control, "postrm"), "utf8");
  t.match(
    postrm,
    /if \[ "\$1" = purge \]; then[\s\S]*rm -rf[^\n]*\/var\/lib\/bootfleet/,
    "purge removes data",
  );
  t.notMatch(
    postrm.slice(0, postrm.indexOf('if [ "$1" = purge ]')),
    /\/var\/lib\/bootfleet/,
    "nothing but purge touches data",
  );
});

t.test("the extracted package runs on its bundled runtime", async (t) => {
  const root = tempDir(t, "bf-deb-root-");
  dpkgDeb("-x", deb.path, root);
  const node = join(root, LIB, "node/bin/node");
  const run = (args: string[], cwd = root) =>
    spawnSync(node, args, {
      cwd,
      // No BOOTFLEET_* variables from the test's environment.
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
      encoding: "utf8",
      timeout: 30_000,
    });

  const v = run(["--version"]);
  t.match(v.stdout.trim(), /^v20\.\d+\.\d+$/, "the bundled node is Node.js 20");
  t.equal(v.stdout.trim(), process.version, "the runtime the package was built with");

  for (const name of ["bootfleetd", "bootfleet"]) {
    const wrapper = readFileSync(join(root, "usr/bin", name), "utf8");
    t.match(
      wrapper,
      `exec /usr/lib/bootfleet/node/bin/node /usr/lib/bootfleet/bin/${name}.js "$@"`,
      `/usr/bin/${name} runs the bundled node`,
    );
    t.equal(spawnSync("sh", ["-n", join(root, "usr/bin", name)]).status, 0, `sh -n ${name}`);
  }

  const conffile = join(root, CONFFILE);
  t.equal(readFileSync(conffile, "utf8"), renderConfigTemplate(), "the conffile is the template");

  const printed = run([
    join(root, LIB, "bin/bootfleetd.js"),
    "--config",
    conffile,
    "--print-config",
  ]);
  t.equal(printed.status, 0, `--print-config exits 0: ${printed.stderr}`);
  const privileges = detectPrivileges();
  const effective = adjustForPrivileges(
    loadConfig({ path: conffile, env: {}, privileges, cwd: root }),
    privileges,
  ).config;
  // This test runs from the repository, whose recipes are its images/; the package has
  // none beside its code and uses the ones it installs.
  effective.images.recipes_dir = INSTALLED_RECIPES_DIR;
  const expected = printableConfig(effective);
  t.equal(
    printed.stdout,
    expected,
    "prints the embedded defaults (native modules and conffile load)",
  );

  t.match(
    printed.stdout,
    `recipes_dir = "${INSTALLED_RECIPES_DIR}"`,
    "the installed daemon builds the recipes the package installs",
  );
  const shipped = loadRecipe(join(root, INSTALLED_RECIPES_DIR, "debian-12"));
  const repoRecipe = loadRecipe(join(REPO, "images/debian-12"));
  t.equal(
    recipeHash(shipped, ["deb http://deb.example/debian bookworm main"]),
    recipeHash(repoRecipe, ["deb http://deb.example/debian bookworm main"]),
    "the shipped recipe has the repository's build cache key",
  );

  const version = run([join(root, LIB, "bin/bootfleet.js"), "version"]);
  t.equal(version.stdout.trim(), `bootfleet ${VERSION}`, "the admin command runs");

  // better-sqlite3 is loaded lazily by the daemon: open a database with the copied addon.
  const sqlite = run([
    "-e",
    `const D = require(${JSON.stringify(join(root, LIB, "node_modules/better-sqlite3"))});
     process.stdout.write(new D(":memory:").prepare("select 6 * 7 as v").get().v + "\\n");`,
  ]);
  t.equal(sqlite.stdout.trim(), "42", `better-sqlite3 loads in the bundled node: ${sqlite.stderr}`);
});

const lintianPath = spawnSync("sh", ["-c", "command -v lintian"], {
  encoding: "utf8",
}).stdout.trim();
t.test(
  "lintian reports no error",
  {
    skip:
      lintianPath || process.env.CI === "true"
        ? false
        : "lintian is not installed (apt-get install lintian); CI installs it",
  },
  async (t) => {
    const r = spawnSync("lintian", ["--info", "--display-level", ">=info", deb.path], {
      encoding: "utf8",
      timeout: 240_000,
    });
    t.notOk(r.error, `lintian ran: ${r.error?.message ?? ""}`);
    const tags = r.stdout.split("\n").filter((l) => /^[EWIP]: /.test(l));
    t.same(
      tags.filter((l) => l.startsWith("E: ")),
      [],
      `no E: line\n${r.stdout}${r.stderr}`,
    );
    t.same(
      tags.filter((l) => /unused-override|mismatched-override/.test(l)),
      [],
      "every lintian override still matches a tag",
    );
    t.notMatch(r.stdout, /[1-9]\d* unused overrides?/, "no unused lintian override");
    t.comment(`lintian warnings: ${tags.filter((l) => l.startsWith("W: ")).length}`);
  },
);
