import { copyFileSync, cpSync, existsSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { tempDir } from "../helpers/daemon.js";
import { bootGuest, GUEST_FILE_TIMEOUT_MS, guestSkipReason } from "./harness/guest.js";

// Versions, updates, writeback snapshots and promotes with the lvm-thin overlay driver, on
// real device-mapper: this machine's kernel has none, so they run in the Debian guest. The
// driver module is this build's (dist/), run by this host's node (the guest is Debian 12 too),
// doing what VersionStorage and the reconciler ask of it: an overlay, a snapshot of it
// (freezeVersion), a restore (reset from the snapshot), a promote (freezeVersion into a
// version), an update's draft committed, retention deleting an origin.
// A bound, not a timing: on a 2-core host shared by several test runs a TCG boot of the
// guest has taken more than the harness's default 5 minutes.
const BOOT_BOUND_MS = 900_000;
/** Each guest command's bound (lvm and a node start are slow under TCG on a loaded host). */
const CMD = { timeoutMs: 300_000 };
t.setTimeout(GUEST_FILE_TIMEOUT_MS + BOOT_BOUND_MS);
const DIST = join(import.meta.dirname, "..", "..", "dist");

t.test(
  "lvm-thin: versions, updates, snapshots, restore, promote",
  { skip: guestSkipReason() },
  async (t) => {
    if (!existsSync(join(DIST, "iscsi", "overlay", "lvm-thin.js"))) {
      t.fail("dist/ is missing: run `npm run build` first (the guest runs the built driver)");
      return;
    }
    const share = tempDir(t, "bf-guest-lvm-");
    cpSync(DIST, join(share, "dist"), { recursive: true });
    copyFileSync(process.execPath, join(share, "node"));
    const g = await bootGuest(t, {
      shareDir: share,
      extraDisks: [{ sizeMiB: 512 }],
      log: (m) => t.comment(m),
    });
    await g.sh(
      `pvcreate -q /dev/vdb && vgcreate -q bfvg /dev/vdb
     lvcreate -q -L 400M -T bfvg/pool
     lvcreate -q -V 64M -T bfvg/pool -n img1-v1
     printf 'GOLDEN-V1...' | dd of=/dev/bfvg/img1-v1 bs=512 conv=notrunc status=none && sync`,
      CMD,
    );
    // One driver call per run; a logger that says nothing (pino is not in the share).
    const script = `
    import { createLvmThinDriver } from "/host/dist/iscsi/overlay/lvm-thin.js";
    const quiet = { info() {}, warn() {}, error() {}, debug() {}, child() { return quiet; } };
    const d = createLvmThinDriver({ vg: "bfvg", logger: quiet });
    await d.check();
    const [op, a, b] = process.argv.slice(2);
    const r = op === "create" ? await d.create(a, b)
      : op === "reset" ? await d.reset(a, b)
      : op === "freeze" ? await d.freezeVersion(a, b)
      : op === "deleteVersion" ? await d.deleteVersion(a)
      : op === "delete" ? await d.delete(a)
      : await d.list();
    console.log(JSON.stringify(r ?? null));
  `;
    await g.sh(
      `cp /host/node /root/node && chmod +x /root/node && cat > /root/lvm.mjs <<'EOF'\n${script}\nEOF`,
      CMD,
    );
    const call = async (...args: string[]) =>
      JSON.parse(await g.sh(`/root/node /root/lvm.mjs ${args.join(" ")}`, CMD)) as {
        kind: string;
        path: string;
      } | null;
    const head = (dev: string) =>
      g.sh(`dd if=${dev} bs=512 count=1 iflag=direct status=none | head -c 12`, CMD);
    const write = (dev: string, text: string) =>
      g.sh(
        `printf '${text}' | dd of=${dev} bs=512 conv=notrunc oflag=direct status=none && sync`,
        CMD,
      );

    // A persistent machine's overlay, and what it wrote.
    const own = (await call("create", "bfvg/img1-v1", "t9-system"))!;
    t.equal(own.path, "/dev/bfvg/bfov_t9-system");
    await write(own.path, "MACHINE-WR-1");

    // Snapshot: a thin snapshot of the overlay; the machine writes on; restore.
    const snap = (await call("freeze", "t9-system", "snap-t9-0a1b2c3d"))!;
    t.same(snap, { kind: "block", path: "/dev/bfvg/snap-t9-0a1b2c3d", sizeBytes: 64 << 20 });
    t.match(
      await g.sh("lvs --noheadings -o lv_name,origin,pool_lv bfvg", CMD),
      /snap-t9-0a1b2c3d\s+bfov_t9-system\s+pool/,
      "the snapshot is a thin snapshot of the overlay, in the pool (no copy)",
    );
    await write(own.path, "MACHINE-WR-2");
    t.equal(await head(snap.path), "MACHINE-WR-1", "the snapshot keeps the state it was taken in");
    await call("reset", snap.path, "t9-system");
    t.equal(await head(own.path), "MACHINE-WR-1", "restore: the later write is gone");

    // Promote: the machine's writeback becomes version 2.
    const v2 = (await call("freeze", "t9-system", "img1-v2-0a1b2c3d"))!;
    t.equal(await head(v2.path), "MACHINE-WR-1", "version 2 holds the machine's state");
    await write(own.path, "MACHINE-WR-3");
    t.equal(await head(v2.path), "MACHINE-WR-1", "later writes never reach the version");

    // An update: a draft of version 2, written by the super-client, committed as version 3.
    const draft = (await call("create", "bfvg/img1-v2-0a1b2c3d", "u1-draft"))!;
    t.equal(await head(draft.path), "MACHINE-WR-1", "the draft starts as version 2");
    await write(draft.path, "DRAFT-WR-444");
    const v3 = (await call("freeze", "u1-draft", "img1-v3-0a1b2c3d"))!;
    await call("delete", "u1-draft");
    t.equal(await head(v3.path), "DRAFT-WR-444", "version 3 holds the draft's content");
    await call("reset", v3.path, "t9-system");
    t.equal(await head(own.path), "DRAFT-WR-444", "a reset moves the machine to version 3");

    // Retention deletes versions 1 and 2 (origins of the others), the snapshot goes too: the
    // thin snapshots made from them keep their content.
    await call("deleteVersion", "/dev/bfvg/img1-v1");
    await call("deleteVersion", v2.path);
    await call("deleteVersion", snap.path);
    t.equal(await head(v3.path), "DRAFT-WR-444", "version 3 survives its origins' deletion");
    t.equal(await head(own.path), "DRAFT-WR-444", "and so does the machine's overlay");
    t.same(
      await call("list"),
      ["t9-system"],
      "versions and snapshots are never listed as overlays",
    );
    await call("delete", "t9-system");
    t.same(
      (await g.sh("lvs --noheadings -o lv_name bfvg", CMD)).split(/\s+/).filter(Boolean).sort(),
      ["img1-v3-0a1b2c3d", "pool"],
      "only the kept version and the pool are left",
    );
  },
);
