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
    const manage = tgtdManager(tgtd.controlPort);
    const answers = await Promise.allSettled(
      Array.from({ length: 400 }, () => manage(["--op", "show", "--mode", "target"])),
    );
    const failed = answers.filter((a) => a.status === "rejected");
    t.equal(
      failed.length,
      0,
      `no request failed: ${String((failed[0] as PromiseRejectedResult)?.reason)}`,
    );
    const done = answers.filter((a) => a.status === "fulfilled" && a.value.code === 0);
    t.equal(done.length, 400, "all 400 done (code 0)");
    t.ok(TGTD_MAX_IN_FLIGHT < 64, "the limit is below tgtd's listen backlog");
  },
);
