// Name policy and confinement to the TFTP root, on a real temporary folder with real symlinks.

import { lstat, mkdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import t from "tap";
import { normaliseTftpName, resolveTftpPath } from "../../../src/netboot/tftp/resolve.js";
import { makeTempDir } from "./fixtures/helpers.js";

t.test("normalisation", async (t) => {
  t.same(normaliseTftpName("/undionly.kpxe"), { ok: true, name: "undionly.kpxe" });
  t.same(normaliseTftpName("boot\\x86\\wdsnbp.com"), { ok: true, name: "boot/x86/wdsnbp.com" });
  t.same(normaliseTftpName("//a/./b//c"), { ok: true, name: "a/b/c" });
  t.equal(normaliseTftpName("../etc/passwd").ok, false);
  t.equal(normaliseTftpName("a/../../b").ok, false);
  t.equal(normaliseTftpName("a\\..\\..\\b").ok, false, "backslash parent segments too");
  t.equal(normaliseTftpName("a\x01b").ok, false);
  t.equal(normaliseTftpName("x".repeat(256)).ok, false);
  t.equal(normaliseTftpName("x".repeat(255)).ok, true);
  t.equal(normaliseTftpName("é".repeat(128)).ok, false, "length counts bytes, not characters");
});

t.test("resolution inside a root", async (t) => {
  const base = await makeTempDir(t, "resolve");
  const root = join(base, "root");
  await mkdir(join(root, "sub"), { recursive: true });
  await writeFile(join(root, "sub", "file.bin"), "x");
  await writeFile(join(base, "secret"), "s");
  await symlink(join(base, "secret"), join(root, "escape"));
  await symlink("sub/file.bin", join(root, "inside-link"));
  await symlink(base, join(root, "dirlink"));
  const ctx = {
    realRoot: root,
    aliases: new Map([
      ["ipxe.efi", "/usr/lib/ipxe/ipxe.efi"],
      ["gone.efi", join(base, "nope")],
    ]),
    maxNameLength: 255,
  };

  const ok = await resolveTftpPath("/sub/file.bin", ctx);
  t.same(ok, { ok: true, name: "sub/file.bin", path: join(root, "sub", "file.bin"), alias: false });

  const viaLink = await resolveTftpPath("inside-link", ctx);
  t.ok(
    viaLink.ok && viaLink.path === join(root, "sub", "file.bin"),
    "symlink staying inside is served",
  );

  const outward = await resolveTftpPath("escape", ctx);
  t.ok(!outward.ok && outward.errorCode === 2, "symlink leading out: access violation");
  const throughDir = await resolveTftpPath("dirlink/secret", ctx);
  t.ok(
    !throughDir.ok && throughDir.errorCode === 2,
    "directory symlink leading out: access violation",
  );

  const dotdot = await resolveTftpPath("sub/../../secret", ctx);
  t.ok(!dotdot.ok && dotdot.errorCode === 2);

  const abs = await resolveTftpPath("/etc/passwd", ctx);
  t.ok(
    !abs.ok && abs.errorCode === 1,
    "an absolute name is looked up under the root, where it is not",
  );

  const missing = await resolveTftpPath("nothing", ctx);
  t.ok(!missing.ok && missing.errorCode === 1);

  const alias = await resolveTftpPath("/ipxe.efi", ctx);
  t.ok(alias.ok && alias.alias, "alias found with a leading slash");
  t.ok(alias.ok && alias.path.endsWith("ipxe.efi"), "alias target resolved through its symlink");

  const deadAlias = await resolveTftpPath("gone.efi", ctx);
  t.ok(!deadAlias.ok && deadAlias.errorCode === 1);
});

t.test("a regular file straight in the root is resolved by one lstat, handed on", async (t) => {
  const base = await makeTempDir(t, "resolve-lstat");
  const root = join(base, "root");
  await mkdir(join(root, "sub"), { recursive: true });
  await writeFile(join(root, "snponly.efi"), "x");
  await writeFile(join(root, "sub", "file.bin"), "y");
  await writeFile(join(base, "secret"), "s");
  await symlink(join(base, "secret"), join(root, "escape"));
  await symlink("snponly.efi", join(root, "link.efi"));
  const ctx = { realRoot: root, aliases: new Map<string, string>(), maxNameLength: 255 };

  const plain = await resolveTftpPath("/snponly.efi", ctx);
  t.ok(plain.ok && plain.path === join(root, "snponly.efi"));
  const st = await lstat(join(root, "snponly.efi"));
  t.ok(
    plain.ok && plain.stats?.isFile() && plain.stats.ino === st.ino,
    "its lstat comes with it, for the file store's cache check",
  );

  // Everything else takes the realpath way and carries no Stats: the store takes its own.
  const viaLink = await resolveTftpPath("link.efi", ctx);
  t.ok(viaLink.ok && viaLink.path === join(root, "snponly.efi") && viaLink.stats === undefined);
  const nested = await resolveTftpPath("sub/file.bin", ctx);
  t.ok(nested.ok && nested.stats === undefined);
  const outward = await resolveTftpPath("escape", ctx);
  t.ok(!outward.ok && outward.errorCode === 2, "a symlink leading out is still refused");
  const dir = await resolveTftpPath("sub", ctx);
  t.ok(dir.ok && dir.stats === undefined, "a directory is left to the store, as before");
  const missing = await resolveTftpPath("nothing.efi", ctx);
  t.ok(!missing.ok && missing.errorCode === 1 && !missing.refused, "missing: file not found");
});
