import { execFile, execFileSync } from "node:child_process";
import { promisify } from "node:util";
import t from "tap";
import { TGTD_MAX_IN_FLIGHT, tgtdManager } from "../../../src/iscsi/target/tgtd-ipc.js";
import { TestTgtd } from "../../fixtures/iscsi/tgtd.js";

// A burst of management requests far past tgtd's listen backlog, as 500 PCs' new CHAP
// secrets at once make (bench/storm): each is answered, none fails to connect. One
// connection per request, sent all at once, filled the backlog and failed with EAGAIN.
const notRoot = process.getuid?.() !== 0;

t.test(
  "a burst of 400 requests to a real tgtd: every one answered",
  { skip: notRoot ? "needs root: starts tgtd" : false },
  async (t) => {
    const tgtd = await TestTgtd.start();
    t.teardown(() => tgtd.stop());
    // The socket's listen backlog as the kernel holds it (Send-Q of a listening socket).
    const socket = `/var/run/tgtd/socket.${tgtd.controlPort}`;
    const listening = execFileSync("ss", ["-xlH"], { encoding: "utf8" })
      .split("\n")
      .find((l) => l.includes(` ${socket} `));
    const backlog = Number(listening?.trim().split(/\s+/)[3]);
    t.ok(backlog > 0, `tgtd's backlog read: ${listening}`);
    t.ok(
      TGTD_MAX_IN_FLIGHT + 8 <= backlog,
      `${TGTD_MAX_IN_FLIGHT} in flight leave 8 of tgtd's ${backlog} places to others`,
    );
    const manage = tgtdManager(tgtd.controlPort);
    const burst = Promise.allSettled(
      Array.from({ length: 400 }, () => manage(["--op", "show", "--mode", "target"])),
    );
    // An admin's tgtadm during the burst gets in: the driver does not take every place.
    const tgtadm = promisify(execFile);
    const admin = await Promise.allSettled(
      Array.from({ length: 6 }, () =>
        tgtadm("tgtadm", [
          "-C",
          String(tgtd.controlPort),
          "--lld",
          "iscsi",
          "--op",
          "show",
          "--mode",
          "target",
        ]),
      ),
    );
    t.same(
      admin.map((a) => a.status),
      Array(6).fill("fulfilled"),
      `an admin's tgtadm answered during the burst: ${String((admin.find((a) => a.status === "rejected") as PromiseRejectedResult | undefined)?.reason ?? "")}`,
    );
    const answers = await burst;
    const failed = answers.filter((a) => a.status === "rejected");
    t.equal(
      failed.length,
      0,
      `no request failed: ${String((failed[0] as PromiseRejectedResult)?.reason)}`,
    );
    const done = answers.filter((a) => a.status === "fulfilled" && a.value.code === 0);
    t.equal(done.length, 400, "all 400 done (code 0)");
  },
);
