// Option negotiation rules from RFC 2347/2348/2349/7440, and the blksize cap from the MTU.

import t from "tap";
import { maxBlksizeForMtu, negotiateOptions } from "../../../src/netboot/tftp/options.js";

const limits = { maxBlksize: 1468, maxWindowsize: 32 };
const ask = (pairs: Array<[string, string]>, size = 1000) =>
  negotiateOptions(new Map(pairs), size, limits);

t.test("blksize cap from the MTU: MTU - 20 IP - 8 UDP - 4 TFTP, within 8..65464", async (t) => {
  t.equal(maxBlksizeForMtu(1500), 1500 - 20 - 8 - 4);
  t.equal(maxBlksizeForMtu(9000), 9000 - 32);
  t.equal(maxBlksizeForMtu(65536), 65464, "loopback MTU is capped by RFC 2348's maximum");
  t.equal(maxBlksizeForMtu(20), 8, "never below RFC 2348's minimum");
});

t.test("blksize: granted up to the cap, smaller answer when asked for more", async (t) => {
  t.equal(ask([["blksize", "1024"]]).blksize, 1024);
  const big = ask([["blksize", "65464"]]);
  t.equal(big.blksize, 1468);
  t.same(big.oack, [["blksize", "1468"]]);
  const tiny = ask([["blksize", "7"]]);
  t.equal(tiny.blksize, 512, "below 8 is invalid: refused, default size");
  t.same(tiny.oack, []);
});

t.test("tsize is answered with the size, only when asked", async (t) => {
  t.same(ask([["tsize", "0"]], 173792).oack, [["tsize", "173792"]]);
  t.same(ask([["blksize", "1468"]], 173792).oack, [["blksize", "1468"]]);
});

t.test("timeout is echoed unchanged in 1..255, refused otherwise", async (t) => {
  const ok = ask([["timeout", "3"]]);
  t.equal(ok.timeoutMs, 3000);
  t.same(ok.oack, [["timeout", "3"]]);
  t.same(ask([["timeout", "0"]]).oack, []);
  t.same(ask([["timeout", "256"]]).oack, []);
});

t.test("windowsize is capped and echoed (RFC 7440)", async (t) => {
  t.equal(ask([["windowsize", "8"]]).windowsize, 8);
  t.same(ask([["windowsize", "64"]]).oack, [["windowsize", "32"]]);
  t.same(ask([["windowsize", "0"]]).oack, []);
});

t.test("unknown and non-numeric options are ignored, not echoed", async (t) => {
  const r = ask([
    ["multicast", ""],
    ["utimeout", "1000"],
    ["blksize", "1e3"],
    ["tsize", "-1"],
  ]);
  t.same(r.oack, []);
  t.equal(r.blksize, 512);
});
