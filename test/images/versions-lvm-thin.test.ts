import { pino } from "pino";
import t from "tap";
import type { CommandRunner } from "../../src/host/exec.js";
import { createLvmThinDriver } from "../../src/iscsi/overlay/lvm-thin.js";

// No device-mapper here: the lvm-thin driver's version commands are recorded against a
// small model of one VG (lvm2's JSON report format), as in test/iscsi/overlay/lvm-thin.test.ts.
const VG = "vgbf";

function fakeLvm() {
  const calls: string[][] = [];
  const lvs = new Map<string, { size: number; attr: string; origin: string }>([
    ["pool", { size: 100, attr: "twi-aotz--", origin: "" }],
    ["golden", { size: 10, attr: "Vwi-a-tz--", origin: "" }],
  ]);
  const run: CommandRunner = async (file, args) => {
    calls.push([file, ...args]);
    if (file === "lvs") {
      const lv = [...lvs].map(([name, v]) => ({
        lv_name: name,
        lv_size: String(v.size),
        data_percent: "1.00",
        origin: v.origin,
        lv_attr: v.attr,
      }));
      return { stdout: JSON.stringify({ report: [{ lv }] }), stderr: "" };
    }
    if (file === "lvcreate") {
      const name = args[args.indexOf("-n") + 1]!;
      const origin = args.at(-1)!.split("/")[1]!;
      lvs.set(name, { ...lvs.get(origin)!, origin });
    }
    if (file === "lvremove") lvs.delete(args.at(-1)!.split("/")[1]!);
    return { stdout: "", stderr: "" };
  };
  return { calls, lvs, run };
}

t.test(
  "lvm-thin: a draft is frozen as a thin snapshot (constant time), and deleted by path",
  async (t) => {
    const lvm = fakeLvm();
    const driver = createLvmThinDriver({ vg: VG, logger: pino({ level: "silent" }), run: lvm.run });
    await driver.create("vgbf/golden", "u1-draft");
    lvm.calls.length = 0;
    const ref = await driver.freezeVersion!("u1-draft", "img1-v2-abcd");
    t.same(ref, { kind: "block", path: "/dev/vgbf/img1-v2-abcd", sizeBytes: 10 });
    t.same(
      lvm.calls.filter((c) => c[0] !== "lvs"),
      [
        ["lvcreate", "-s", "-kn", "-n", "img1-v2-abcd", "vgbf/bfov_u1-draft"],
        ["lvchange", "-ay", "-K", "vgbf/img1-v2-abcd"],
      ],
      "a snapshot of the draft, activated: no copy",
    );
    t.same(await driver.list(), ["u1-draft"], "a version is never listed as an overlay");
    await t.rejects(driver.freezeVersion!("u1-draft", "bfov_x"), { code: "INVALID_NAME" });
    await t.rejects(driver.freezeVersion!("u1-draft", "../etc"), { code: "INVALID_NAME" });
    await driver.deleteVersion!("/dev/vgbf/img1-v2-abcd");
    t.notOk(lvm.lvs.has("img1-v2-abcd"), "deleted");
    await driver.deleteVersion!("/dev/vgbf/img1-v2-abcd");
    t.pass("deleting a missing version succeeds");
  },
);
