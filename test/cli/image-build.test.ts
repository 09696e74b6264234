import { join, resolve } from "node:path";
import t from "tap";
import { startDaemon, tempDir } from "../helpers/daemon.js";
import { runCli } from "./run-cli.js";

const RECIPES = resolve(import.meta.dirname, "../fixtures/recipes");

/**
 * `bootfleet image recipes` and `bootfleet image build` against a real built daemon (run
 * `npm run build` first) whose recipes_dir holds test/fixtures/recipes: real step scripts,
 * the real job, the import with qemu-img. Needs no root.
 */
t.test("bootfleet image build over the local socket", async (t) => {
  const dir = tempDir(t, `bf-cli-build-${process.pid}-`);
  const sock = join(dir, "api.sock");
  await startDaemon(t, {
    env: {
      BOOTFLEET_DATA_DIR: dir,
      BOOTFLEET_TFTP_ENABLED: "false",
      BOOTFLEET_HTTP_SOCKET: sock,
      BOOTFLEET_IMAGES_RECIPES_DIR: RECIPES,
      BOOTFLEET_IMAGES_BUILD_CACHE_DIR: join(dir, "cache"),
    },
  });
  const S = ["--socket", sock];

  const listed = await runCli(["image", "recipes", ...S]);
  t.equal(listed.code, 0, listed.stderr);
  t.match(listed.stdout, /^NAME\s+STEPS\s+CACHED\s+DESCRIPTION$/m);
  t.match(listed.stdout, /^tiny\s+disk,fs\s+no\s+A test recipe/m);

  const built = await runCli(["image", "build", "tiny", "--name", "Tiny", ...S]);
  t.equal(built.code, 0, built.stderr);
  t.match(built.stdout, /^building image (\d+) "Tiny" from recipe tiny: job (\d+)$/m);
  t.match(built.stdout, /^job \d+ image_build running \d+% (disk|fs)$/m, "progress, per step");
  t.match(built.stdout, /^job \d+ image_build succeeded 100%$/m);
  t.match(built.stdout, /^image \d+ is ready$/m);

  // On a terminal: one bar redrawn in place.
  const again = await runCli(["image", "build", "tiny", "--name", "Tiny again", ...S], true);
  t.equal(again.code, 0, again.stderr);
  t.ok(
    again.stdout.includes(`\r\u001b[2K[${"#".repeat(30)}] 100% succeeded\n`),
    "the bar ends full",
  );

  const imgs = await runCli(["images", "list", "--json", ...S]);
  t.same(
    (JSON.parse(imgs.stdout) as { name: string; status: string }[]).map((i) => [i.name, i.status]),
    [
      ["Tiny", "ready"],
      ["Tiny again", "ready"],
    ],
  );

  const failed = await runCli(["image", "build", "failing", "--name", "Broken", ...S]);
  t.equal(failed.code, 1, "a failed step: exit 1");
  t.match(failed.stderr, /job \d+ failed: step boom \(20-boom\.sh\) failed \(exit 3\)/);

  const unknown = await runCli(["image", "build", "nope", "--name", "N", ...S]);
  t.equal(unknown.code, 1, "an unknown recipe: exit 1");
  t.match(unknown.stderr, /no recipe named "nope" is installed \(HTTP 404\)/);

  const hostile = await runCli(["image", "build", "../tiny", "--name", "N", ...S]);
  t.equal(hostile.code, 1);
  t.match(hostile.stderr, /recipe: .*\(HTTP 422\)/);

  const noName = await runCli(["image", "build", "tiny", ...S]);
  t.equal(noName.code, 2, "usage: --name missing");
  t.match(noName.stderr, /--name NAME is required/);
  const misplaced = await runCli(["images", "list", "--name", "x", ...S]);
  t.equal(misplaced.code, 2, "--name goes with build only");
});
