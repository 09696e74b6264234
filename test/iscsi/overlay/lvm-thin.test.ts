import { pino } from "pino";
import t from "tap";
import { CommandError, type CommandRunner } from "../../../src/host/exec.js";
import { OverlayError } from "../../../src/iscsi/overlay/errors.js";
import { createLvmThinDriver, parseLvsReport } from "../../../src/iscsi/overlay/lvm-thin.js";

// This machine has no device-mapper, so these tests drive the driver through a runner that
// records each command and answers from a small model of one VG, in lvm2's own output format
// (lvmreport(7): JSON strings; lv_attr "V" = thin volume, "t" = thin pool). The driver is
// proven against real LVM later, in a Debian guest.

const logger = pino({ level: "silent" });
const GiB = 1024 ** 3;
const VG = "vgbf";

interface FakeLv {
  size: number;
  attr: string;
  origin: string;
  percent: string;
}

class RecordingLvm {
  readonly calls: string[][] = [];
  readonly lvs = new Map<string, FakeLv>([
    ["pool", { size: 100 * GiB, attr: "twi-aotz--", origin: "", percent: "30.00" }],
    ["golden", { size: 10 * GiB, attr: "Vwi-a-tz--", origin: "", percent: "40.00" }],
    ["thick", { size: 4 * GiB, attr: "-wi-a-----", origin: "", percent: "" }],
  ]);
  poolFull = false;

  readonly run: CommandRunner = async (file, args) => {
    this.calls.push([file, ...args]);
    const fail = (stderr: string): never => {
      throw new CommandError(file, args, { code: 5, stderr });
    };
    const lvArg = (ref: string | undefined): string => {
      const [vg, lv] = (ref ?? "").split("/");
      if (vg !== VG) fail(`  Volume group "${vg}" not found\n`);
      if (lv === undefined || !this.lvs.has(lv)) fail(`  Failed to find logical volume "${ref}"\n`);
      return lv as string;
    };
    switch (file) {
      case "vgs":
        if (args.at(-1) !== VG) fail(`  Volume group "${args.at(-1)}" not found\n`);
        return { stdout: JSON.stringify({ report: [{ vg: [{ vg_name: VG }] }] }), stderr: "" };
      case "lvs": {
        const lv = [...this.lvs].map(([name, v]) => ({
          lv_name: name,
          lv_size: String(v.size),
          data_percent: v.percent,
          origin: v.origin,
          lv_attr: v.attr,
        }));
        return { stdout: JSON.stringify({ report: [{ lv }] }, null, 2), stderr: "" };
      }
      case "lvcreate": {
        const name = args[args.indexOf("-n") + 1] ?? "";
        const origin = lvArg(args.at(-1));
        if (this.lvs.has(name))
          fail(`  Logical Volume "${name}" already exists in volume group "${VG}"\n`);
        if (this.poolFull) {
          fail(
            `  Cannot create new thin volume, free space in thin pool ${VG}/pool reached threshold.\n`,
          );
        }
        const o = this.lvs.get(origin)!;
        this.lvs.set(name, { size: o.size, attr: "Vwi-a-tz--", origin, percent: o.percent });
        return { stdout: `  Logical volume "${name}" created.\n`, stderr: "" };
      }
      case "lvchange":
        lvArg(args.at(-1));
        return { stdout: "", stderr: "" };
      case "lvremove": {
        const lv = lvArg(args.at(-1));
        this.lvs.delete(lv);
        return { stdout: `  Logical volume "${lv}" successfully removed.\n`, stderr: "" };
      }
      case "lvrename": {
        const [vg, from, to] = args;
        const lv = lvArg(`${vg}/${from}`);
        this.lvs.set(to ?? "", this.lvs.get(lv)!);
        this.lvs.delete(lv);
        return { stdout: `  Renamed "${from}" to "${to}" in volume group "${vg}"\n`, stderr: "" };
      }
      default:
        return fail(`unexpected command ${file}`);
    }
  };

  /** Calls other than lvs reports: the ones that change something. */
  changes(): string[][] {
    return this.calls.filter((c) => c[0] !== "lvs");
  }
}

function setup() {
  const lvm = new RecordingLvm();
  const driver = createLvmThinDriver({ vg: VG, logger, run: lvm.run });
  return { lvm, driver };
}

t.test("recorded-command runner: create makes and activates a thin snapshot", async (t) => {
  const { lvm, driver } = setup();
  const ref = await driver.create("vgbf/golden", "pc-01");
  t.same(ref, { kind: "block", path: "/dev/vgbf/bfov_pc-01", sizeBytes: 10 * GiB });
  t.same(lvm.changes(), [
    ["lvcreate", "-s", "-kn", "-n", "bfov_pc-01", "vgbf/golden"],
    ["lvchange", "-ay", "-K", "vgbf/bfov_pc-01"],
  ]);
  t.same(lvm.calls[0], [
    "lvs",
    "--reportformat",
    "json",
    "--units",
    "b",
    "--nosuffix",
    "-o",
    "lv_name,lv_size,data_percent,origin,lv_attr,lv_tags",
    VG,
  ]);

  lvm.calls.length = 0;
  const again = await driver.create("/dev/vgbf/golden", "pc-01");
  t.same(again, ref, "create of an existing overlay returns the same ref (a /dev path works too)");
  t.same(lvm.changes(), [["lvchange", "-ay", "-K", "vgbf/bfov_pc-01"]], "and only activates it");

  lvm.lvs.delete("golden");
  t.same(
    await driver.create("vgbf/golden", "pc-01"),
    ref,
    "an existing overlay outlives its image",
  );
  await t.rejects(driver.reset("vgbf/golden", "pc-01"), { code: "NOT_FOUND" }, "reset needs it");
  t.ok(lvm.lvs.has("bfov_pc-01"), "and a failed reset keeps the overlay");
});

t.test("recorded-command runner: list, usage and delete", async (t) => {
  const { lvm, driver } = setup();
  await driver.create("vgbf/golden", "pc-02");
  await driver.create("vgbf/golden", "pc-01");
  lvm.lvs.set("bfovnew_pc-09", {
    size: GiB,
    attr: "Vwi-a-tz--",
    origin: "golden",
    percent: "1.00",
  });
  t.same(await driver.list(), ["pc-01", "pc-02"], "only bootfleet overlays, not images or temps");

  lvm.lvs.get("bfov_pc-01")!.percent = "25.00";
  t.same(
    await driver.usage("pc-01"),
    { allocatedBytes: 2.5 * GiB },
    "allocatedBytes is data_percent of lv_size; uniqueBytes unknown for thin snapshots",
  );
  await t.rejects(driver.usage("pc-77"), { code: "NOT_FOUND" });

  lvm.calls.length = 0;
  await driver.delete("pc-02");
  t.same(lvm.changes(), [["lvremove", "-y", "vgbf/bfov_pc-02"]]);
  t.same(await driver.list(), ["pc-01"]);
  lvm.calls.length = 0;
  await driver.delete("pc-02");
  t.same(lvm.changes(), [], "deleting a missing overlay runs no lvremove");
});

t.test("recorded-command runner: reset snapshots first, then swaps names", async (t) => {
  const { lvm, driver } = setup();
  await driver.create("vgbf/golden", "pc-01");
  lvm.lvs.get("bfov_pc-01")!.percent = "90.00";
  lvm.calls.length = 0;
  const ref = await driver.reset("vgbf/golden", "pc-01");
  t.same(ref, { kind: "block", path: "/dev/vgbf/bfov_pc-01", sizeBytes: 10 * GiB });
  t.same(lvm.changes(), [
    ["lvcreate", "-s", "-kn", "-n", "bfovnew_pc-01", "vgbf/golden"],
    ["lvremove", "-y", "vgbf/bfov_pc-01"],
    ["lvrename", "vgbf", "bfovnew_pc-01", "bfov_pc-01"],
    ["lvchange", "-ay", "-K", "vgbf/bfov_pc-01"],
  ]);
  t.equal(lvm.lvs.get("bfov_pc-01")?.percent, "40.00", "the overlay is a fresh snapshot again");
  t.notOk(lvm.lvs.has("bfovnew_pc-01"), "no temp LV remains");
});

t.test(
  "recorded-command runner: a full thin pool is NO_SPACE and keeps the old disk",
  async (t) => {
    const { lvm, driver } = setup();
    await driver.create("vgbf/golden", "pc-01");
    lvm.poolFull = true;
    lvm.calls.length = 0;
    const err = await driver.reset("vgbf/golden", "pc-01").catch((e: unknown) => e);
    t.ok(err instanceof OverlayError && err.code === "NO_SPACE", "reset fails with NO_SPACE");
    t.match(
      (err as Error).message,
      /overlay "pc-01".*vgbf is full/,
      "naming the overlay and the VG",
    );
    t.notOk(
      lvm.changes().some((c) => c[0] === "lvremove"),
      "the old overlay was not removed",
    );
    t.ok(lvm.lvs.has("bfov_pc-01"), "and still exists");
    await t.rejects(driver.create("vgbf/golden", "pc-02"), { code: "NO_SPACE" });
  },
);

t.test("recorded-command runner: an interrupted reset is finished by create", async (t) => {
  const { lvm, driver } = setup();
  lvm.lvs.set("bfovnew_pc-01", {
    size: 10 * GiB,
    attr: "Vwi-a-tz--",
    origin: "golden",
    percent: "40.00",
  });
  await driver.create("vgbf/golden", "pc-01");
  t.same(lvm.changes(), [
    ["lvremove", "-y", "vgbf/bfovnew_pc-01"],
    ["lvcreate", "-s", "-kn", "-n", "bfov_pc-01", "vgbf/golden"],
    ["lvchange", "-ay", "-K", "vgbf/bfov_pc-01"],
  ]);
});

t.test("recorded-command runner: bad images and ids are refused before any change", async (t) => {
  const { lvm, driver } = setup();
  await t.rejects(driver.create("vgbf/thick", "pc-01"), { code: "NOT_THIN" }, "a thick LV");
  await t.rejects(driver.create("vgbf/missing", "pc-01"), { code: "NOT_FOUND" }, "a missing LV");
  await t.rejects(driver.create("othervg/golden", "pc-01"), { code: "INVALID_NAME" }, "another VG");
  await t.rejects(driver.create("/srv/images/golden.img", "pc-01"), { code: "INVALID_NAME" });
  await t.rejects(driver.create("vgbf/golden", "../pc"), { code: "INVALID_NAME" }, "a bad id");
  await t.rejects(
    driver.create("vgbf/golden", "pc_tdata"),
    { code: "INVALID_NAME" },
    "an id that makes a reserved LV name",
  );
  t.same(lvm.changes(), [], "nothing was created or removed");
  t.throws(
    () => createLvmThinDriver({ vg: "-vg", logger, run: lvm.run }),
    { code: "INVALID_NAME" },
    "a bad VG name is refused at construction",
  );
});

t.test("recorded-command runner: check needs the VG", async (t) => {
  const lvm = new RecordingLvm();
  await t.resolves(createLvmThinDriver({ vg: VG, logger, run: lvm.run }).check());
  const err = await createLvmThinDriver({ vg: "nope", logger, run: lvm.run })
    .check()
    .catch((e: unknown) => e);
  t.ok(err instanceof OverlayError && err.code === "COMMAND_FAILED");
  t.match((err as Error).message, /lvm2.*nope.*Volume group "nope" not found/s);
});

t.test("lvs JSON: several reports, empty data_percent, a B suffix", async (t) => {
  const rows = parseLvsReport(
    JSON.stringify({
      report: [
        {
          lv: [
            { lv_name: "a", lv_size: "1024B", data_percent: "", origin: "", lv_attr: "-wi-a-----" },
          ],
        },
        {
          lv: [
            {
              lv_name: "b",
              lv_size: "2048",
              data_percent: "0.50",
              origin: "a",
              lv_attr: "Vwi-a-tz--",
            },
          ],
        },
      ],
    }),
  );
  t.same([...rows.keys()], ["a", "b"]);
  t.equal(rows.get("a")?.sizeBytes, 1024);
  t.equal(rows.get("a")?.dataPercent, undefined);
  t.equal(rows.get("b")?.dataPercent, 0.5);
  t.throws(() => parseLvsReport("  WARNING: something\n"), { code: "COMMAND_FAILED" });
});
