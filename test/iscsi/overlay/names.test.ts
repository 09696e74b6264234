import t from "tap";
import {
  validateLvName,
  validateOverlayId,
  validateVgName,
} from "../../../src/iscsi/overlay/names.js";

t.test("overlay ids: a safe file-name charset, never a path", async (t) => {
  for (const ok of ["pc-01", "a", "Lab2.pc_17", "0", "x".repeat(100), "aa:bb".replace(":", "-")]) {
    t.equal(validateOverlayId(ok), ok, `${JSON.stringify(ok)} is accepted`);
  }
  const bad = [
    "",
    ".",
    "..",
    "../x",
    "a/b",
    "/abs",
    ".hidden",
    "-opt",
    "_x",
    "a..b",
    "a b",
    "a\nb",
    "é",
    "x".repeat(101),
    "a\0b",
    "a:b",
    "a+b",
  ];
  for (const id of bad) {
    t.throws(
      () => validateOverlayId(id),
      { code: "INVALID_NAME" },
      `${JSON.stringify(id)} is refused`,
    );
  }
});

// lvm(8), VALID NAMES: a-z A-Z 0-9 + _ . -; no leading hyphen; not "." or ".."; an LV may not be
// "snapshot" or "pvmove" nor contain _cdata _cmeta _corig _iorig _mimage _mlog _pmspare _rimage
// _rmeta _tdata _tmeta _vdata _vorigin _wcorig.
t.test("VG names follow lvm(8)", async (t) => {
  for (const ok of ["vg0", "bootfleet", "vg.data+1", "VG_x-y"]) t.equal(validateVgName(ok), ok);
  for (const bad of ["", "-vg", ".", "..", "vg/0", "vg 0", "vg$", "v".repeat(128)]) {
    t.throws(() => validateVgName(bad), { code: "INVALID_NAME" }, `VG ${JSON.stringify(bad)}`);
  }
  t.equal(validateVgName("v".repeat(127)), "v".repeat(127), "127 characters is the limit");
});

t.test("LV names follow lvm(8)", async (t) => {
  for (const ok of ["golden", "bfov_pc-01", "a+b.c", "snapshot1", "my_tdat"]) {
    t.equal(validateLvName(ok), ok);
  }
  const reserved = [
    "_cdata",
    "_cmeta",
    "_corig",
    "_iorig",
    "_mimage",
    "_mlog",
    "_pmspare",
    "_rimage",
    "_rmeta",
    "_tdata",
    "_tmeta",
    "_vdata",
    "_vorigin",
    "_wcorig",
  ];
  for (const part of reserved) {
    t.throws(() => validateLvName(`bfov_pc${part}2`), { code: "INVALID_NAME" }, `contains ${part}`);
  }
  for (const bad of ["", "-lv", ".", "..", "snapshot", "pvmove", "a/b", "a b"]) {
    t.throws(() => validateLvName(bad), { code: "INVALID_NAME" }, `LV ${JSON.stringify(bad)}`);
  }
});

t.test("the device-mapper name VG-LV (hyphens doubled) must fit too", async (t) => {
  const vg = "v-g";
  // "v--g-" is 5 characters, so an LV of 122 plain characters makes exactly 127.
  t.equal(validateLvName("l".repeat(122), vg), "l".repeat(122), "127 in all is accepted");
  t.throws(() => validateLvName("l".repeat(123), vg), { code: "INVALID_NAME" });
  t.throws(
    () => validateLvName(`${"l".repeat(121)}-`, vg),
    { code: "INVALID_NAME" },
    "122 characters with a hyphen make 128: a hyphen counts twice",
  );
});
