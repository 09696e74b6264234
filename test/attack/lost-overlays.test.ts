import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { Store } from "../../src/store/index.js";
import { TestTgtd } from "../fixtures/iscsi/tgtd.js";
import { type RunningDaemon, startDaemon, tempDir } from "../helpers/daemon.js";
import { mountLoopFs } from "../iscsi/overlay/loopfs.js";

// Before: a start on an empty database (what the daemon's own "database is corrupt ...
// move it away to start with an empty one" suggests) swept every overlay as an orphan and
// deleted it: every persistent machine's disk. Now the sweep quarantines what the database
// does not know, leaves unknown targets running, and only an admin deletes.
const skip = process.getuid?.() === 0 ? false : "needs root: loop-mounted XFS and tgtd";
const PREFIX = "iqn.2024-01.io.bootfleet";
const MiB = 1024 * 1024;

const sha = (p: string) => createHash("sha256").update(readFileSync(p)).digest("hex");

async function api(d: RunningDaemon, method: string, path: string, token?: string, body?: unknown) {
  const res = await fetch(`http://127.0.0.1:${d.port}${path}`, {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body ? { "content-type": "application/json" } : {}),
    },
    ...(body ? { body: JSON.stringify(body) } : {}),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

async function login(d: RunningDaemon, username: string, password: string): Promise<string> {
  const r = await api(d, "POST", "/api/auth/login", undefined, { username, password });
  return r.json.access_token as string;
}

t.test(
  "a start on an empty database quarantines every overlay instead of deleting it",
  { skip },
  async (t) => {
    const fs = await mountLoopFs("xfs-reflink", 1024 ** 3, "lost");
    t.teardown(() => fs.cleanup());
    const data = fs.dir;
    const tgtd = await TestTgtd.start();
    t.teardown(() => tgtd.stop());
    const confDir = tempDir(t, `bf-lost-tgt-${process.pid}-`);
    const env = {
      BOOTFLEET_DATA_DIR: data,
      BOOTFLEET_TFTP_ENABLED: "false",
      BOOTFLEET_ISCSI_TARGET_DRIVER: "tgt",
      BOOTFLEET_ISCSI_TGT_CONTROL_PORT: String(tgtd.controlPort),
      BOOTFLEET_ISCSI_TGT_CONF_DIR: confDir,
      BOOTFLEET_ISCSI_PORTAL_ADDRESS: "127.0.0.1",
      BOOTFLEET_ISCSI_PORTAL_PORT: String(tgtd.portalPort),
    };

    mkdirSync(join(data, "images"), { recursive: true });
    const golden = join(data, "images", "golden.raw");
    writeFileSync(golden, Buffer.from("GOLDEN"));
    truncateSync(golden, 16 * MiB);
    const db = join(data, "bootfleet.db");
    const store = Store.open({ path: db, busyTimeoutMs: 1000 });
    const image = store.images.create({
      name: "Golden",
      filename: "golden.raw",
      status: "ready",
      format: "raw",
    });
    store.images.addVersion(image.id, { path: golden, size_bytes: 16 * MiB });
    const targetIds: number[] = [];
    for (const n of [1, 2]) {
      const m = store.machines.create({ name: `pc-${n}`, mac_address: `52:54:00:bf:60:0${n}` });
      const target = store.targets.create({
        name: `pc-${n}-target`,
        iqn: `${PREFIX}:pc-${n}`,
        portal_ip: "127.0.0.1",
        portal_port: tgtd.portalPort,
        machine_id: m.id,
        system_image_id: image.id,
        initiator_iqn: `${PREFIX}:client-${n}`,
        chap_username: `user${n}`,
        chap_password: `Secret${n}Secret0123`,
      });
      targetIds.push(target.id);
    }
    store.close();

    // First run: the overlays are made at start; each machine "writes" its own data.
    const first = await startDaemon(t, { env });
    const running = await tgtd.tgtadm(["--op", "show", "--mode", "target"]);
    t.match(running.stdout, `${PREFIX}:pc-2`, "the first run serves both targets");
    const overlay = (id: number) => join(data, "overlays", `t${id}-system.img`);
    const before: string[] = [];
    for (const [i, id] of targetIds.entries()) {
      t.ok(existsSync(overlay(id)), `overlay of target ${id} made`);
      const fh = Buffer.from(`MACHINE-${i + 1}-DATA`);
      const { openSync, writeSync, closeSync } = await import("node:fs");
      const fd = openSync(overlay(id), "r+");
      writeSync(fd, fh, 0, fh.length, 4096);
      closeSync(fd);
      before.push(sha(overlay(id)));
    }
    first.proc.kill("SIGTERM");
    await first.exited;

    // The database is lost (moved away), the daemon starts on an empty one.
    for (const f of [
      "bootfleet.db",
      "bootfleet.db-wal",
      "bootfleet.db-shm",
      "initial-admin-password",
    ])
      rmSync(join(data, f), { force: true });
    const second = await startDaemon(t, { env });
    const password = readFileSync(join(data, "initial-admin-password"), "utf8").trim();
    const admin = await login(second, "admin", password);

    const { readdirSync } = await import("node:fs");
    const kept = [
      ...readdirSync(join(data, "overlays")),
      ...(existsSync(join(data, "overlays", "quarantine"))
        ? readdirSync(join(data, "overlays", "quarantine"))
        : []),
    ].filter((f) => f.endsWith(".img"));
    t.equal(kept.length, 2, "no overlay was deleted by the start on an empty database");
    const q = await api(second, "GET", "/api/storage/quarantine", admin);
    t.equal(q.status, 200);
    const overlays = q.json.overlays as { name: string; overlayId: string; sizeBytes: number }[];
    t.same(
      overlays.map((o) => o.overlayId).sort(),
      targetIds.map((id) => `t${id}-system`).sort(),
      "both overlays are listed as quarantined",
    );
    for (const [i, id] of targetIds.entries()) {
      const o = overlays.find((x) => x.overlayId === `t${id}-system`)!;
      const file = join(data, "overlays", "quarantine", `${o.name}.img`);
      t.ok(existsSync(file), `overlay of target ${id} still exists, in quarantine`);
      t.equal(sha(file), before[i], `overlay of target ${id} is byte-identical`);
    }
    t.same(
      (q.json.unknown_targets as string[]).sort(),
      [`${PREFIX}:pc-1`, `${PREFIX}:pc-2`],
      "targets the database does not know are listed",
    );
    const shown = await tgtd.tgtadm(["--op", "show", "--mode", "target"]);
    t.match(shown.stdout, `${PREFIX}:pc-1`, "and not torn down at start");
    const health = await api(second, "GET", "/api/storage/health", admin);
    t.equal((health.json.quarantine as { overlays: number }).overlays, 2, "health counts them");
    t.equal(health.json.status === "healthy", false, "health is not healthy while disks wait");

    // A viewer cannot delete; an admin can, and it is recorded.
    const made = await api(second, "POST", "/api/users", admin, {
      username: "watcher",
      password: "Viewer-Pass-0123",
      role: "viewer",
    });
    t.equal(made.status, 201);
    const viewer = await login(second, "watcher", "Viewer-Pass-0123");
    const victim = overlays[0]!;
    const denied = await api(second, "DELETE", `/api/storage/quarantine/${victim.name}`, viewer);
    t.equal(denied.status, 403, "a viewer cannot delete a quarantined overlay");
    const ok = await api(second, "DELETE", `/api/storage/quarantine/${victim.name}`, admin);
    t.equal(ok.status, 200, "an admin can");
    t.notOk(existsSync(join(data, "overlays", "quarantine", `${victim.name}.img`)), "it is gone");
    t.ok(
      existsSync(join(data, "overlays", "quarantine", `${overlays[1]!.name}.img`)),
      "the other one is kept",
    );
    const again = await api(second, "DELETE", `/api/storage/quarantine/${victim.name}`, admin);
    t.equal(again.status, 404);
    const hist = await api(second, "GET", "/api/history?resource_type=storage", admin);
    t.match(JSON.stringify(hist.json), "quarantine_delete", "history records the deletion");
    second.proc.kill("SIGTERM");
    await second.exited;
  },
);
