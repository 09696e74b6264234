import { execFileSync } from "node:child_process";
import { chmodSync } from "node:fs";
import t from "tap";
import { DAEMON_BIN, startDaemon, tempDir } from "../helpers/daemon.js";

// A normal user's start: the daemon runs as uid 65534 (nobody) in a network namespace of
// its own (so port 8080 is free whatever the host runs), is told to use port 80, and must
// move to 8080, leave DHCP off, and say so in one line.
const isRoot = process.getuid?.() === 0;

t.test(
  "a non-root start serves /api/health on the high port",
  { skip: isRoot ? false : "needs root to create a network namespace and switch to uid 65534" },
  async (t) => {
    const ns = `bf-unpriv-${process.pid}`;
    execFileSync("ip", ["netns", "add", ns]);
    t.teardown(() => execFileSync("ip", ["netns", "del", ns]));
    execFileSync("ip", ["netns", "exec", ns, "ip", "link", "set", "lo", "up"]);
    const dir = tempDir(t);
    chmodSync(dir, 0o777);

    // uid 65534 needs to read the checkout; where a CI clone sits in a private folder,
    // keep uid 0 but drop every capability, which is what the daemon actually checks.
    const asNobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    let drop = asNobody;
    try {
      execFileSync(asNobody[0]!, [...asNobody.slice(1), "test", "-r", DAEMON_BIN]);
    } catch {
      drop = ["setpriv", "--inh-caps=-all", "--bounding-set=-all"];
      t.comment("checkout not readable by uid 65534: running as uid 0 without capabilities");
    }
    const d = await startDaemon(t, {
      wrapper: ["ip", "netns", "exec", ns, ...drop],
      env: {
        BOOTFLEET_DATA_DIR: dir,
        BOOTFLEET_HTTP_LISTEN: "127.0.0.1:80",
        BOOTFLEET_TFTP_PORT: "69",
        BOOTFLEET_DHCP_ENABLED: "true",
      },
    });
    t.equal(d.port, 8080, "HTTP moved to 8080");
    const notes = d.logs.filter((l) => String(l.msg).startsWith("running unprivileged"));
    t.equal(notes.length, 1, "one log line says so");
    t.match(notes[0]?.msg, /HTTP moved from port 80 to 8080/);
    t.match(notes[0]?.msg, /TFTP moved from port 69 to 6969/);
    t.match(notes[0]?.msg, /proxy-DHCP off/);

    const out = execFileSync(
      "ip",
      ["netns", "exec", ns, "curl", "-s", "-m", "5", "http://127.0.0.1:8080/api/health"],
      { encoding: "utf8" },
    );
    t.match(JSON.parse(out), { status: "healthy", service: "bootfleet" });
    d.proc.kill("SIGTERM");
    t.equal(await d.exited, 0);
  },
);
