import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chmodSync, existsSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import t from "tap";
import { REPO, tempDir } from "../helpers/daemon.js";

// A new user's first afternoon: `npm start` holds 8080 (HTTP) and 6969 (TFTP) while
// `npm test` runs, both without privileges. The suite's daemon tests ask for port 0, so
// they must pass beside it. Here, in a network namespace of our own (the host's ports are
// left alone), another process holds both ports while the daemon test files run as
// uid 65534 (nobody).
const DAEMON_TESTS = [
  "test/api/daemon.test.ts",
  "test/api/services-daemon.test.ts",
  "test/daemon/lifecycle.test.ts",
];
/** Each file's own bound, and the kill that enforces it if the file ignores it. */
const FILE_TIMEOUT_S = 180;

const isRoot = process.getuid?.() === 0;
let skip: string | false = false;
if (!isRoot) skip = "needs root to create a network namespace and switch to uid 65534";
else if (!existsSync(join(REPO, "dist/daemon/main.js")))
  skip = "needs the built daemon (npm run build)";
else {
  try {
    execFileSync("setpriv", [
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      "test",
      "-r",
      join(REPO, "package.json"),
    ]);
  } catch {
    skip = "the checkout is not readable by uid 65534";
  }
}

/** Runs a command, resolving with its exit code and output; kills its process group at the bound. */
function run(cmd: string[], timeoutMs: number) {
  const child = spawn(cmd[0]!, cmd.slice(1), {
    cwd: REPO,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const timer = setTimeout(() => killGroup(child), timeoutMs);
  return new Promise<{ code: number | string; out: string }>((resolve) =>
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal ?? "unknown", out });
    }),
  );
}

function killGroup(child: ChildProcess) {
  try {
    if (child.pid) process.kill(-child.pid, "SIGKILL");
  } catch {
    // already gone
  }
}

const HOLDER = `
const net = require("node:net"), dgram = require("node:dgram");
const tcp = net.createServer().listen(8080, "0.0.0.0", () => {
  const udp = dgram.createSocket("udp4");
  udp.bind(6969, "0.0.0.0", () => process.stdout.write("held\\n"));
});
setInterval(() => {}, 1 << 30);
`;

t.test(
  "the daemon tests pass as a normal user while 8080 and 6969 are taken",
  { skip },
  async (t) => {
    const ns = `bf-unpriv-suite-${process.pid}`;
    execFileSync("ip", ["netns", "add", ns]);
    t.teardown(() => execFileSync("ip", ["netns", "del", ns]));
    execFileSync("ip", ["netns", "exec", ns, "ip", "link", "set", "lo", "up"]);

    // The stand-in for `npm start`: another process holding both ports.
    const holder = spawn("ip", ["netns", "exec", ns, process.execPath, "-e", HOLDER], {
      detached: true,
      stdio: ["ignore", "pipe", "inherit"],
    });
    t.teardown(() => killGroup(holder));
    const held = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 15_000);
      createInterface({ input: holder.stdout! }).once("line", (l) => {
        clearTimeout(timer);
        resolve(l === "held");
      });
      holder.once("exit", () => resolve(false));
    });
    t.ok(held, "another process holds TCP 8080 and UDP 6969");
    const ss = execFileSync("ip", ["netns", "exec", ns, "ss", "-Htlnu"], { encoding: "utf8" });
    t.match(ss, /:8080\b/, "8080 is listening");
    t.match(ss, /:6969\b/, "6969 is bound");

    const home = tempDir(t, `bf-unpriv-suite-${process.pid}-`);
    chmodSync(home, 0o777);
    // In parallel, as tap runs them: it bounds the wall time and adds the ports they take
    // from each other.
    const results = await Promise.all(
      DAEMON_TESTS.map((file) =>
        run(
          [
            "ip",
            "netns",
            "exec",
            ns,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            // A clean environment: tap's own process-info hook (NODE_OPTIONS) writes into
            // the checkout, which uid 65534 may not.
            "env",
            "-i",
            `PATH=${process.env.PATH ?? "/usr/bin:/bin"}`,
            `HOME=${home}`,
            `TMPDIR=${home}`,
            `TAP_TIMEOUT=${FILE_TIMEOUT_S - 10}`,
            process.execPath,
            "--import",
            "tsx",
            file,
          ],
          FILE_TIMEOUT_S * 1000,
        ),
      ),
    );
    DAEMON_TESTS.forEach((file, i) => {
      const { code, out } = results[i]!;
      const failures = out.split("\n").filter((l) => /^\s*not ok /.test(l));
      t.equal(code, 0, `${file} passes as uid 65534${failures.length ? `:\n${out}` : ""}`);
      t.same(failures, [], `${file}: no failed assertion`);
      t.match(out, /^# \{ total: \d+, pass: \d+/m, `${file} ran to its summary`);
    });
  },
);
