import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { tgtadmRequest, tgtdCall, tgtdErrorText } from "../../../src/iscsi/target/tgtd-ipc.js";

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

t.test("an answer in many pieces is read whole, and the call ends it as tgtadm does", async (t) => {
  // tgtd writes a big listing in pieces and leaves the connection open: the call must take
  // the length from the header (itself split here) and close once that many bytes are in.
  const dir = mkdtempSync(join(tmpdir(), "bf-tgtd-ipc-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "sock");
  const text = Array.from({ length: 4000 }, (_, i) => `Target ${i + 1}: iqn.x:pc-${i}`).join("\n");
  const body = Buffer.from(`${text}\0\0`);
  const answer = Buffer.alloc(8 + body.length);
  answer.writeUInt32LE(0, 0);
  answer.writeUInt32LE(answer.length, 4);
  body.copy(answer, 8);
  let closedByClient = false;
  const server = createServer((sock) => {
    sock.once("data", async () => {
      for (const cut of [3, 8, 1000]) {
        sock.write(answer.subarray(cut === 3 ? 0 : cut === 8 ? 3 : 8, cut));
        await new Promise((r) => setTimeout(r, 5));
      }
      for (let at = 1000; at < answer.length; at += 7000) {
        sock.write(answer.subarray(at, Math.min(at + 7000, answer.length)));
        await new Promise((r) => setImmediate(r));
      }
      // Nothing more, and no end from this side: tgtd waits for the client to close.
    });
    sock.on("end", () => {
      closedByClient = true;
      sock.end();
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  t.teardown(() => server.close());
  const got = await tgtdCall(path, tgtadmRequest(["--op", "show", "--mode", "target"]));
  t.equal(got.code, 0);
  t.equal(got.text, text, "every piece, in order, without the trailing NULs");
  t.ok(closedByClient, "the client closed the connection once the answer was whole");
});
