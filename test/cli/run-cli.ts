import { PassThrough } from "node:stream";
import { main } from "../../src/cli/main.js";

/** Runs `bootfleet <args>` in this process, with its output captured (stdout a TTY or not). */
export async function runCli(args: string[], tty = false) {
  const out = Object.assign(new PassThrough(), { isTTY: tty });
  const err = new PassThrough();
  let stdout = "";
  let stderr = "";
  out.on("data", (d) => (stdout += d));
  err.on("data", (d) => (stderr += d));
  const code = await main(args, {}, { stdin: new PassThrough(), stdout: out, stderr: err });
  return { code, stdout, stderr };
}
