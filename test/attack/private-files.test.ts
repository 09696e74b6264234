// data_dir 0750 and the database 0600 at every start: a folder loosened by hand (or by a
// restore from a backup) is tightened again by the next start, not only by the installer.
import { chmodSync, statSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { startDaemon, tempDir } from "../helpers/daemon.js";

const mode = (p: string) => (statSync(p).mode & 0o777).toString(8);

t.test("a restart makes data_dir and the database private again", async (t) => {
  const data = tempDir(t, "bf-private-");
  const db = join(data, "bootfleet.db");
  const env = { BOOTFLEET_DATA_DIR: data };

  const first = await startDaemon(t, { env, timeoutMs: 90_000 });
  t.equal(mode(data), "750", "data_dir 0750 after the first start");
  t.equal(mode(db), "600", "database 0600 after the first start");
  first.proc.kill("SIGTERM");
  t.equal(await first.exited, 0, "stopped cleanly");

  chmodSync(data, 0o777);
  for (const f of [db, `${db}-wal`, `${db}-shm`]) {
    try {
      chmodSync(f, 0o666);
    } catch {}
  }
  t.equal(mode(db), "666", "loosened while stopped");

  const second = await startDaemon(t, { env, timeoutMs: 90_000 });
  t.equal(mode(data), "750", "data_dir 0750 again");
  t.equal(mode(db), "600", "database 0600 again");
  for (const f of [`${db}-wal`, `${db}-shm`]) {
    try {
      t.equal(mode(f), "600", `${f.slice(data.length + 1)} 0600`);
    } catch {}
  }
  second.proc.kill("SIGTERM");
  t.equal(await second.exited, 0, "stopped cleanly");
});
