import { statfsSync } from "node:fs";
import t from "tap";
import { checkReserve } from "../../src/diskspace/reserve.js";
import { tempDir } from "../helpers/daemon.js";

t.test("the reserve refuses what would take free space below it, and says why", async (t) => {
  const dir = tempDir(t, "bf-reserve-");
  const s = statfsSync(dir);
  const free = s.bavail * s.bsize;
  const total = s.blocks * s.bsize;

  const off = await checkReserve(dir, 0);
  t.ok(off.ok, "a reserve of 0 refuses nothing that fits");
  t.equal(off.reserve_bytes, 0);

  const fits = await checkReserve(dir, 0, Math.floor(free / 2));
  t.ok(fits.ok, "half the free space fits with no reserve");

  const tooBig = await checkReserve(dir, 0, free * 2);
  t.notOk(tooBig.ok, "twice the free space never fits");
  t.match(tooBig.reason, /not enough free space on the file system of .* for [\d.]+ GiB more/);

  // A reserve larger than what is free refuses even a zero-byte write.
  const pct = Math.min(50, Math.ceil(((free + 1) / total) * 100) + 1);
  if (pct * total > free * 100) {
    const full = await checkReserve(dir, pct);
    t.notOk(full.ok, `a ${pct}% reserve is above the free space`);
    t.match(
      full.reason,
      /kept free for running machines' overlays \(\[storage\] reserve_percent\)/,
    );
    t.equal(full.reserve_bytes, Math.ceil((total * pct) / 100));
  }
});
