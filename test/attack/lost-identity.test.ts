import { join } from "node:path";
import t from "tap";
import { openStore } from "../../src/store/db.js";
import { Store } from "../../src/store/index.js";
import { MIGRATIONS } from "../../src/store/migrations.js";
import { tempDir } from "../helpers/daemon.js";

// A target's id names its overlay (t<id>-system): an id handed out again is a new machine
// booting a deleted machine's disk. Before migration 6, SQLite reused the largest id once
// its row was deleted (the new target got id 1 again).

function seed(s: Store, n: number) {
  const image = s.images.create({ name: `img-${n}`, filename: "x.raw", status: "ready" });
  s.images.addVersion(image.id, { path: `/srv/img-${n}.raw` });
  const machine = s.machines.create({
    name: `pc-${n}`,
    mac_address: `02:00:00:00:00:${n.toString(16).padStart(2, "0")}`,
  });
  const target = s.targets.create({
    name: `pc-${n}-target`,
    iqn: `iqn.2026-01.test:pc-${n}`,
    portal_ip: "10.0.0.1",
    machine_id: machine.id,
    system_image_id: image.id,
    initiator_iqn: `iqn.2026-01.test:client-${n}`,
    chap_username: `u${n}`,
    chap_password: "SecretSecret0123",
  });
  return { image, machine, target };
}

t.test("a deleted target's, machine's or image's id is never handed out again", async (t) => {
  const s = Store.open({ path: join(tempDir(t), "bf.db"), busyTimeoutMs: 100 });
  t.teardown(() => s.close());
  const first = seed(s, 1);
  s.targets.delete(first.target.id);
  s.machines.delete(first.machine.id);
  s.images.delete(first.image.id);
  const second = seed(s, 2);
  t.ok(second.target.id > first.target.id, `new target id ${second.target.id}`);
  t.ok(second.machine.id > first.machine.id, `new machine id ${second.machine.id}`);
  t.ok(second.image.id > first.image.id, `new image id ${second.image.id}`);
});

t.test("migration 6 keeps every row, id and reference of an older database", async (t) => {
  const path = join(tempDir(t), "bf.db");
  const before = MIGRATIONS.filter((m) => m.version < 6);
  const old = new Store(openStore({ path, busyTimeoutMs: 100, migrations: before }));
  const a = seed(old, 1);
  const b = seed(old, 2);
  old.sessions.start({ machine_id: b.machine.id, boot_method: "iscsi" });
  old.close();

  const s = Store.open({ path, busyTimeoutMs: 100 });
  t.teardown(() => s.close());
  t.same(s.db.pragma("foreign_key_check"), [], "no broken reference");
  t.equal(s.db.pragma("foreign_keys", { simple: true }), 1, "foreign keys enforced again");
  t.equal(s.targets.get(b.target.id)?.machine_id, b.machine.id, "target keeps its machine");
  t.equal(s.targets.get(a.target.id)?.iqn, a.target.iqn, "first target intact");
  t.equal(s.images.versions(b.image.id).length, 1, "versions kept");
  t.equal(s.sessions.current(b.machine.id)?.machine_id, b.machine.id, "sessions kept");
  // Cascades still work after the rebuild: deleting a machine takes its targets along.
  s.machines.delete(a.machine.id);
  t.equal(s.targets.get(a.target.id), undefined, "ON DELETE CASCADE still holds");
  s.targets.delete(b.target.id);
  const c = seed(s, 3);
  t.ok(c.target.id > b.target.id, "after the migration, ids are not reused either");
});
