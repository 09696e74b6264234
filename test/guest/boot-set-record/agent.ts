// Runs in the Debian guest (bundled by esbuild, run by the host's node binary): the
// dm-snapshot overlay driver's boot-set recording as the daemon runs it, in one process per
// operation (a recording lives in the process that started it). Reads are made by dd with
// O_DIRECT on the machine's device, as LIO's block backstore reads. Prints one JSON line.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { pino } from "pino";
import { createDmSnapshotDriver } from "../../../src/iscsi/overlay/dm-snapshot.js";
import { bootSetPathOf, warmVersion } from "../../../src/iscsi/warm.js";
import { type AgentCall, runAgent } from "../harness/agent-cli.js";

const dev = (id: string) => `/dev/mapper/bfsnap-${id}`;

/** `offset:length` in bytes (both multiples of 512), read once with O_DIRECT. */
function readRange(device: string, spec: string): void {
  const [offset, length] = spec.split(":").map(Number);
  execFileSync("dd", [
    `if=${device}`,
    "of=/dev/null",
    `bs=${length}`,
    "count=1",
    `skip=${offset}`,
    "iflag=direct,skip_bytes",
    "status=none",
  ]);
}

const dmsetupMessage = (name: string, msg: string) =>
  execFileSync("dmsetup", ["message", name, "0", msg], { encoding: "utf8" });

async function main({ op, args, need }: AgentCall): Promise<unknown> {
  const logger = pino({ level: "info" }, pino.destination(2));
  const windowSeconds = Number(process.env.BF_RECORD_SECONDS ?? "0");
  const d = createDmSnapshotDriver({
    dir: "/srv/bf/overlays",
    imageDir: "/srv/bf/images",
    logger,
    bootSetRecordMs: windowSeconds * 1000,
  });
  switch (op) {
    case "create": {
      const refs = [];
      for (const id of args.slice(1)) refs.push(await d.create(need(0), id));
      return refs;
    }
    // record IMAGE ID OTHER_ID PRINT_DUMP RANGE...: the recording's window ends it.
    case "record": {
      const [image, id, other, dump] = [need(0), need(1), need(2), need(3)];
      const started = await d.recordBootSet(id);
      // A second machine of the same version while the first records: not recorded twice.
      const second = await d.recordBootSet(other);
      for (const r of args.slice(4)) readRange(dev(id), r);
      // The kernel's own answer, kept for the parser's unit test (test/fixtures/dm-stats).
      const region = /^(\d+):/m.exec(dmsetupMessage(`bfsnap-${id}`, "@stats_list"))?.[1];
      if (region !== undefined)
        writeFileSync(dump, dmsetupMessage(`bfsnap-${id}`, `@stats_print ${region}`));
      const deadline = Date.now() + windowSeconds * 1000 + 60_000;
      while (!existsSync(bootSetPathOf(image)) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 250));
      }
      await d.endBootSetRecording(image);
      return {
        started,
        second,
        region,
        csv: existsSync(bootSetPathOf(image)) ? readFileSync(bootSetPathOf(image), "utf8") : null,
        regions_left: dmsetupMessage(`bfsnap-${id}`, "@stats_list"),
      };
    }
    // record-reset IMAGE ID RANGE...: the machine's device goes (a reset) before the window ends.
    case "record-reset": {
      const [image, id] = [need(0), need(1)];
      const started = await d.recordBootSet(id);
      for (const r of args.slice(2)) readRange(dev(id), r);
      await d.reset(image, id);
      const csv = existsSync(bootSetPathOf(image))
        ? readFileSync(bootSetPathOf(image), "utf8")
        : null;
      // The version has its boot set now: the next boot records nothing.
      const again = await d.recordBootSet(id);
      return { started, csv, again, regions_left: dmsetupMessage(`bfsnap-${id}`, "@stats_list") };
    }
    // record-stop IMAGE ID RANGE...: the daemon stops during the recording.
    case "record-stop": {
      const [image, id] = [need(0), need(1)];
      const started = await d.recordBootSet(id);
      for (const r of args.slice(2)) readRange(dev(id), r);
      await d.close();
      return {
        started,
        written: existsSync(bootSetPathOf(image)),
        regions_left: dmsetupMessage(`bfsnap-${id}`, "@stats_list"),
      };
    }
    case "read":
      for (const r of args.slice(1)) readRange(dev(need(0)), r);
      return null;
    case "warm":
      return warmVersion(need(0), { maxBytes: 1 << 30, log: logger });
    case "delete":
      for (const id of args) await d.delete(id);
      return null;
    default:
      throw new Error(`unknown operation ${op}`);
  }
}

runAgent(main);
