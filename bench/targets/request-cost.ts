/**
 * What one tgtd management request costs tgtd as the number of targets grows: the four
 * requests of a boot's new CHAP secret (bootfleet's tid check, then delete, new and bind the
 * account), one at a time, through bootfleet's own management client (src/iscsi/target/
 * tgtd-ipc.ts), on a tgtd of its own with N targets, each with a LUN, an account and an ACL.
 *
 *   node --import tsx bench/targets/request-cost.ts [--targets 100,500] [--port 21]
 *
 * Root (tgtd). A few seconds. Prints one Markdown row per N. Why it exists: the 500-PC storm's
 * script phase waited on tgtd, and tgt's account deletion walks every target, looking each
 * one up by tid in a list (usr/target.c account_del), so it grows with the square of N.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, open, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { tgtdManager } from "../../src/iscsi/target/tgtd-ipc.js";
import { benchArgs } from "../lib/args.js";

const args = benchArgs();
const SIZES = args.str("targets", "100,500").split(",").map(Number);
const PORT = Number(args.str("port", "21"));
if (process.getuid?.() !== 0) throw new Error("needs root: starts tgtd");

const dir = await mkdtemp(join(tmpdir(), "bf-tgt-cost-"));
const lun = join(dir, "lun.img");
await (await open(lun, "w")).truncate(64 * 2 ** 20);
const KINDS = ["tid check (bind ACL, refused)", "delete account", "new account", "bind account"];
console.log(
  `load before: ${loadavg()
    .map((x) => x.toFixed(2))
    .join(" ")}\n`,
);
console.log(`| targets | ${KINDS.join(" | ")} | (ms per request, mean of N) |`);
console.log(`| ---: | ${KINDS.map(() => "---:").join(" | ")} | |`);
try {
  for (const n of SIZES) {
    const tgtd: ChildProcess = spawn(
      "tgtd",
      ["-f", "-C", `${PORT}`, "--iscsi", "portal=127.0.0.1:3297"],
      { stdio: "ignore" },
    );
    try {
      await new Promise((r) => setTimeout(r, 1000));
      const m = tgtdManager(PORT);
      const ok = async (a: string[]) => {
        const r = await m(a);
        if (r.code !== 0) throw new Error(`${a.join(" ")}: tgtd code ${r.code}`);
      };
      for (let i = 1; i <= n; i++) {
        const tid = ["--tid", `${i}`];
        await ok([
          "--op",
          "new",
          "--mode",
          "target",
          ...tid,
          "--targetname",
          `iqn.2026-12.bench:t${i}`,
        ]);
        await ok([
          "--op",
          "new",
          "--mode",
          "logicalunit",
          ...tid,
          "--lun",
          "1",
          "--backing-store",
          lun,
        ]);
        await ok([
          "--op",
          "new",
          "--mode",
          "account",
          "--user",
          `u${i}`,
          "--password",
          `secret${i}pass0`,
        ]);
        await ok(["--op", "bind", "--mode", "account", ...tid, "--user", `u${i}`]);
        await ok([
          "--op",
          "bind",
          "--mode",
          "target",
          ...tid,
          "--initiator-name",
          `iqn.bench:i${i}`,
        ]);
      }
      const requests = (i: number) => [
        [
          "--op",
          "bind",
          "--mode",
          "target",
          "--tid",
          `${i}`,
          "--initiator-name",
          `iqn.bench:i${i}`,
        ],
        ["--op", "delete", "--mode", "account", "--user", `u${i}`],
        ["--op", "new", "--mode", "account", "--user", `u${i}`, "--password", `secret${i}pass1`],
        ["--op", "bind", "--mode", "account", "--tid", `${i}`, "--user", `u${i}`],
      ];
      const total = KINDS.map(() => 0);
      for (let i = 1; i <= n; i++) {
        for (const [k, a] of requests(i).entries()) {
          const t0 = performance.now();
          await m(a);
          total[k]! += performance.now() - t0;
        }
      }
      console.log(`| ${n} | ${total.map((t) => (t / n).toFixed(3)).join(" | ")} | |`);
    } finally {
      tgtd.kill("SIGKILL");
      await new Promise((r) => setTimeout(r, 300));
    }
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
