import { VERSION } from "../version.js";

const USAGE = `Usage: bootfleet <command>

  version           print the version

More commands (user add, ...) come with the management API.`;

/** The `bootfleet` admin command. Returns the exit code. */
export async function main(argv: string[], _env: NodeJS.ProcessEnv): Promise<number> {
  const [command] = argv;
  if (command === "version" || command === "--version") {
    process.stdout.write(`bootfleet ${VERSION}\n`);
    return 0;
  }
  if (command === undefined || command === "help" || command === "--help") {
    process.stdout.write(`${USAGE}\n`);
    return command === undefined ? 2 : 0;
  }
  process.stderr.write(`bootfleet: unknown command "${command}"\n${USAGE}\n`);
  return 2;
}
