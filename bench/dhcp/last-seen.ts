// The cost of a known machine's last_seen, in-process on a real SQLite file: written at once
// (an UPDATE in its own implicit transaction on the reply's turn, as before the pending
// writes carried it) against queued and written with the others of a batch
// (store/pending-offers.ts). A batch of N stands for the requests of one 20 ms write:
// N = 4 is a trickle, 128 a boot storm.
//
//   node --import tsx bench/dhcp/last-seen.ts [--machines 1000] [--rounds 5]
//
// Rounds alternate the two ways; the table gives the median CPU µs per sighting (the
// process's user + system time, so the WAL writes count).

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Store } from "../../src/store/index.js";
import { MachinesRepo } from "../../src/store/machines.js";
import { benchArgs } from "../lib/args.js";

const args = benchArgs();
const MACHINES = args.positiveInt("machines", 1000);
const ROUNDS = args.positiveInt("rounds", 5);
const BATCHES = [4, 32, 128];

const dir = mkdtempSync(join(tmpdir(), "bf-last-seen-"));
const store = Store.open({ path: join(dir, "bf.db"), busyTimeoutMs: 5000 });
const ids: number[] = [];
for (let i = 0; i < MACHINES; i++) {
  const mac = [2, 0xbf, 0, (i >> 16) & 255, (i >> 8) & 255, i & 255]
    .map((b) => b.toString(16).padStart(2, "0"))
    .join(":");
  ids.push(store.machines.create({ name: `pc-${i}`, mac_address: mac }).id);
}
// Without a queue, touchSeen writes at once: what every sighting cost before.
const atOnce = new MachinesRepo(store.db);
const seen = {
  client_arch: 0,
  client_uuid: null,
  vendor_class: "PXEClient:Arch:00000:UNDI:002001",
};

const cpuUs = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

function written(): number {
  const t = cpuUs();
  for (const id of ids) atOnce.touchSeen(id, seen);
  return (cpuUs() - t) / ids.length;
}

function queued(batch: number): number {
  const t = cpuUs();
  for (let k = 0; k < ids.length; k++) {
    store.machines.touchSeen(ids[k]!, seen);
    if ((k + 1) % batch === 0) store.pendingOffers.flush();
  }
  store.pendingOffers.flush();
  return (cpuUs() - t) / ids.length;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const runs: Record<string, number[]> = { "at once": [] };
for (const b of BATCHES) runs[`queued, batches of ${b}`] = [];
written();
queued(32); // warm-up: both paths compiled before the first measured round
for (let r = 0; r < ROUNDS; r++) {
  runs["at once"]!.push(written());
  for (const b of BATCHES) runs[`queued, batches of ${b}`]!.push(queued(b));
}
store.close();
rmSync(dir, { recursive: true, force: true });
const base = median(runs["at once"]!);
console.log(
  `| last_seen of ${MACHINES} known machines | CPU µs per sighting (median of ${ROUNDS}) | against at once |`,
);
console.log("| --- | ---: | ---: |");
for (const [name, xs] of Object.entries(runs)) {
  const m = median(xs);
  console.log(
    `| ${name} | ${m.toFixed(1)} (${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)}) | ${(m / base).toFixed(2)} |`,
  );
}
