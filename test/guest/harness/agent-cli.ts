import { copyFileSync } from "node:fs";
import { join } from "node:path";
import { build } from "esbuild";

/**
 * The small programs a guest test (or bench/lio) runs inside the Debian guest: each is
 * bundled into the share with the host's node (Debian 12, as the guest: the guest image has
 * no runtime of its own), run once per operation as `node agent.cjs OP ARGS...`, and
 * answers with one JSON line on stdout, or a message on stderr and exit code 1.
 */

/** Bundles `entry` into `<share>/agent.cjs` and puts the host's node beside it. */
export async function shareAgent(share: string, entry: string): Promise<void> {
  await build({
    entryPoints: [entry],
    bundle: true,
    platform: "node",
    format: "cjs",
    target: "node20",
    outfile: join(share, "agent.cjs"),
    logLevel: "warning",
  });
  copyFileSync(process.execPath, join(share, "node"));
}

/** One run's operation and arguments; `need(i)` is argument i or an error naming it. */
export interface AgentCall {
  op: string | undefined;
  args: string[];
  need(i: number): string;
}

/** Runs `main` on this process's arguments and prints its answer as the agents do. */
export function runAgent(main: (call: AgentCall) => Promise<unknown>): void {
  const [op, ...args] = process.argv.slice(2);
  const need = (i: number): string => {
    const v = args[i];
    if (v === undefined) throw new Error(`${op}: argument ${i + 1} is missing`);
    return v;
  };
  main({ op, args, need }).then(
    (r) => {
      process.stdout.write(`${JSON.stringify(r ?? null)}\n`);
    },
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
