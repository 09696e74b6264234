import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import t from "tap";
import { selectTargetDriver } from "../../../src/iscsi/target/select.js";
import type { TargetDriver } from "../../../src/iscsi/target/types.js";

const stub = (name: "lio" | "tgt"): TargetDriver => ({
  name,
  firstLun: name === "lio" ? 0 : 1,
  apply: async () => {},
  remove: async () => {},
  list: async () => [],
  sessions: async () => [],
});

t.test("auto picks LIO when its configfs is there, else tgt, and says why", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), `bf-iscsi-sel-${process.pid}-`));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const root = join(dir, "target");
  const lines: string[] = [];
  const logger = pino({}, { write: (s: string) => void lines.push(s) });
  const base = { logger, lio: () => stub("lio"), tgt: () => stub("tgt"), configfsRoot: root };

  t.equal(
    (await selectTargetDriver({ ...base, mode: "auto" })).name,
    "tgt",
    "no configfs, no modprobe",
  );
  t.match(lines.at(-1), /"driver":"tgt".*absent; modprobe not tried/);

  const calls: string[][] = [];
  const failing = async (file: string, args: readonly string[]) => {
    calls.push([file, ...args]);
    throw new Error("modprobe: FATAL: Module target_core_mod not found");
  };
  t.equal((await selectTargetDriver({ ...base, mode: "auto", run: failing })).name, "tgt");
  t.match(calls[0], ["modprobe", "-a", "target_core_mod", "iscsi_target_mod"]);
  t.match(lines.at(-1), /modprobe failed: modprobe: FATAL/);

  // A modprobe that makes the configfs tree appear, as loading target_core_mod does.
  const loading = async () => {
    await mkdir(root);
    return { stdout: "", stderr: "" };
  };
  t.equal((await selectTargetDriver({ ...base, mode: "auto", run: loading })).name, "lio");
  t.match(lines.at(-1), /"driver":"lio".*present after modprobe/);
  t.equal(
    (await selectTargetDriver({ ...base, mode: "auto" })).name,
    "lio",
    "present from the start",
  );
  t.equal((await selectTargetDriver({ ...base, mode: "tgt" })).name, "tgt", "configured wins");
});
