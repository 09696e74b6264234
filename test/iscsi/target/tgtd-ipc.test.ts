import t from "tap";
import { tgtadmRequest, tgtdErrorText } from "../../../src/iscsi/target/tgtd-ipc.js";

// The bytes tgtadm 1.0.85 writes to tgtd's socket for the same arguments, read with
// `strace -e trace=write -xx tgtadm -C 77 --lld iscsi ARGS` (the header, then the body).
interface Seen {
  args: string[];
  mode: number;
  op: number;
  tid: number;
  lun: bigint;
  acDir?: number;
  force?: number;
  body: string;
}
const NO_LUN = 0xffffffffffffffffn;
const seen: Seen[] = [
  {
    args: [
      "--op",
      "new",
      "--mode",
      "target",
      "--tid",
      "1",
      "--targetname",
      "iqn.2024-01.io.bootfleet:pc-1",
    ],
    mode: 1,
    op: 0,
    tid: 1,
    lun: NO_LUN,
    body: "targetname=iqn.2024-01.io.bootfleet:pc-1\0",
  },
  {
    args: [
      "--op",
      "new",
      "--mode",
      "logicalunit",
      "--tid",
      "1",
      "--lun",
      "1",
      "--backing-store",
      "/tmp/tgtcap/disk.img",
      "--bstype",
      "rdwr",
    ],
    mode: 2,
    op: 0,
    tid: 1,
    lun: 1n,
    body: "path=/tmp/tgtcap/disk.img,bstype=rdwr\0",
  },
  {
    args: [
      "--op",
      "update",
      "--mode",
      "logicalunit",
      "--tid",
      "1",
      "--lun",
      "1",
      "--params",
      "readonly=0,scsi_sn=abc,scsi_id=abc",
    ],
    mode: 2,
    op: 5,
    tid: 1,
    lun: 1n,
    body: "targetOps readonly=0,scsi_sn=abc,scsi_id=abc,\0",
  },
  {
    args: ["--op", "bind", "--mode", "target", "--tid", "1", "--initiator-address", "ALL"],
    mode: 1,
    op: 3,
    tid: 1,
    lun: NO_LUN,
    body: "initiator-address=ALL\0",
  },
  {
    args: ["--op", "unbind", "--mode", "target", "--tid", "1", "--initiator-name", "iqn.x:init"],
    mode: 1,
    op: 4,
    tid: 1,
    lun: NO_LUN,
    body: "initiator-name=iqn.x:init\0",
  },
  {
    args: ["--op", "bind", "--mode", "account", "--tid", "1", "--user", "u9", "--outgoing"],
    mode: 7,
    op: 3,
    tid: 1,
    lun: NO_LUN,
    acDir: 1,
    body: "user=u9\0",
  },
  {
    args: ["--op", "delete", "--mode", "account", "--user", "u1"],
    mode: 7,
    op: 1,
    tid: -1,
    lun: NO_LUN,
    body: "user=u1\0",
  },
  {
    args: ["--op", "new", "--mode", "portal", "--param", "portal=127.0.0.1:3298"],
    mode: 3,
    op: 0,
    tid: -1,
    lun: NO_LUN,
    body: "portalOps portal=127.0.0.1:3298,\0",
  },
  {
    args: ["--op", "delete", "--mode", "target", "--tid", "1", "--force"],
    mode: 1,
    op: 1,
    tid: 1,
    lun: NO_LUN,
    force: 1,
    body: "",
  },
  { args: ["--op", "show", "--mode", "target"], mode: 1, op: 2, tid: -1, lun: NO_LUN, body: "" },
  {
    args: ["--op", "stat", "--mode", "target", "--tid", "1"],
    mode: 1,
    op: 6,
    tid: 1,
    lun: NO_LUN,
    body: "",
  },
];

t.test("requests are the bytes tgtadm itself writes", async (t) => {
  for (const s of seen) {
    const b = tgtadmRequest(s.args);
    const what = s.args.join(" ");
    t.equal(b.readUInt32LE(0), s.mode, `${what}: mode`);
    t.equal(b.readUInt32LE(4), s.op, `${what}: op`);
    t.equal(b.subarray(8, 72).toString("latin1").replace(/\0+$/, ""), "iscsi", `${what}: lld`);
    t.equal(b.readUInt32LE(72), 120 + Buffer.byteLength(s.body), `${what}: length`);
    t.equal(b.readInt32LE(76), s.tid, `${what}: tid`);
    t.equal(b.readBigUInt64LE(80), 0n, `${what}: sid`);
    t.equal(b.readBigUInt64LE(88), s.lun, `${what}: lun`);
    t.equal(b.readUInt32LE(108), s.acDir ?? 0, `${what}: account direction`);
    t.equal(b.readUInt32LE(116), s.force ?? 0, `${what}: force`);
    t.equal(b.subarray(120).toString("utf8"), s.body, `${what}: body`);
    t.equal(b.length, 120 + Buffer.byteLength(s.body), `${what}: nothing else`);
  }
});

t.test("arguments it does not know are refused, not sent half-understood", async (t) => {
  t.throws(
    () => tgtadmRequest(["--op", "show", "--mode", "target", "--name", "x"]),
    /--name is not known/,
  );
  t.throws(() => tgtadmRequest(["--op", "burn", "--mode", "target"]), /op burn is not known/);
  t.throws(() => tgtadmRequest(["--op", "show"]), /needs --op and --mode/);
  t.throws(
    () => tgtadmRequest(["--op", "show", "--mode", "target", "--tid"]),
    /--tid needs a value/,
  );
});

t.test("tgtd's answer codes read as tgtadm prints them", async (t) => {
  // Codes seen from tgtd 1.0.85 for these failures (strace of tgtadm's recvfrom).
  t.equal(tgtdErrorText(4), "can't find the target");
  t.equal(tgtdErrorText(5), "can't find the logical unit");
  t.equal(tgtdErrorText(9), "this target already exists");
  t.equal(tgtdErrorText(10), "this logical unit number already exists");
  t.equal(tgtdErrorText(12), "this access control rule already exists");
  t.equal(tgtdErrorText(13), "this access control rule does not exist");
  t.equal(tgtdErrorText(15), "can't find the account");
  t.equal(tgtdErrorText(17), "invalid request");
  t.equal(tgtdErrorText(99), "tgtd error 99");
});
