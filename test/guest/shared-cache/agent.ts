// Runs in the Debian guest (bundled by esbuild, run by the host's node binary): the
// dm-snapshot overlay driver and boot-set warming, as the daemon uses them, one operation
// per process (so every call is also a daemon "restart": adoption is exercised each time).
// Prints the result as one JSON line.
import { pino } from "pino";
import { createDmSnapshotDriver } from "../../../src/iscsi/overlay/dm-snapshot.js";
import { warmVersion } from "../../../src/iscsi/warm.js";
import { type AgentCall, runAgent } from "../harness/agent-cli.js";

async function main({ op, args, need }: AgentCall): Promise<unknown> {
  const logger = pino({ level: "warn" }, pino.destination(2));
  const d = createDmSnapshotDriver({
    dir: process.env.BF_OVERLAYS ?? "/srv/bf/overlays",
    imageDir: process.env.BF_IMAGES ?? "/srv/bf/images",
    logger,
  });
  switch (op) {
    case "check":
      return d.check();
    case "create": {
      // Several ids in one process: each node start costs tens of seconds under TCG.
      const refs = [];
      for (const id of args.slice(1)) refs.push(await d.create(need(0), id));
      return refs.length === 1 ? refs[0] : refs;
    }
    case "reset":
      return d.reset(need(0), need(1));
    case "delete":
      for (const id of args) await d.delete(id);
      return null;
    case "usage":
      return d.usage(need(0));
    case "list":
      return d.list();
    case "freeze":
      return d.freezeVersion!(need(0), need(1));
    case "warm":
      return warmVersion(need(0), { maxBytes: Number(args[1] ?? 1 << 30), log: logger });
    default:
      throw new Error(`unknown operation ${op}`);
  }
}

runAgent(main);
