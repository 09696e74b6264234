import t from "tap";
import { Admission } from "../../../src/netboot/tftp/admission.js";
import {
  ERR_ACCESS_VIOLATION,
  ERR_ILLEGAL_OPERATION,
  ERR_NOT_DEFINED,
  type TftpRequest,
} from "../../../src/netboot/tftp/packet.js";

// Admission alone: which requests may start, and the per-client slots, with no socket.

const rrq = (over: Partial<TftpRequest> = {}): TftpRequest => ({
  op: "RRQ",
  filename: "undionly.kpxe",
  mode: "octet",
  options: new Map(),
  ...over,
});

t.test("a read-only server refuses writes and mail mode", async (t) => {
  const a = new Admission(4);
  const w = a.admit(rrq({ op: "WRQ" }), "10.0.0.1|1000");
  t.match(w, { admit: false, refusal: { code: ERR_ACCESS_VIOLATION } });
  const m = a.admit(rrq({ mode: "mail" }), "10.0.0.1|1000");
  t.match(m, { admit: false, refusal: { code: ERR_ILLEGAL_OPERATION } });
});

t.test("a resent request is a duplicate, not a second transfer", async (t) => {
  const a = new Admission(4);
  t.same(a.admit(rrq(), "10.0.0.1|1000"), { admit: true });
  t.same(
    a.admit(rrq(), "10.0.0.1|1000"),
    { admit: false, unanswered: "duplicate" },
    "while pending",
  );
  a.started("10.0.0.1|1000", { abort() {} });
  a.settled("10.0.0.1|1000");
  t.same(
    a.admit(rrq(), "10.0.0.1|1000"),
    { admit: false, unanswered: "duplicate" },
    "while running",
  );
  t.equal(a.activeTransfers, 1);
  a.end("10.0.0.1|1000");
  t.equal(a.activeTransfers, 0);
  t.same(a.admit(rrq(), "10.0.0.1|1000"), { admit: true }, "a new request once it ended");
});

t.test("the limit counts pending and running requests, and frees on end", async (t) => {
  const a = new Admission(2);
  t.same(a.admit(rrq(), "c1"), { admit: true });
  t.same(a.admit(rrq(), "c2"), { admit: true });
  t.same(a.admit(rrq(), "c3"), { admit: false, unanswered: "busy" }, "no refusal: no ERROR");
  a.settled("c1");
  a.end("c1");
  t.same(a.admit(rrq(), "c3"), { admit: true }, "a slot came free");
});

t.test("one address over its cap is refused with an error, full server or not", async (t) => {
  const a = new Admission(2, 2);
  t.same(a.admit(rrq(), "10.0.0.1|1"), { admit: true });
  t.same(a.admit(rrq(), "10.0.0.1|2"), { admit: true });
  t.match(a.admit(rrq(), "10.0.0.1|3"), {
    admit: false,
    refusal: { code: ERR_NOT_DEFINED, level: "warn" },
  });
  t.same(a.admit(rrq(), "10.0.0.2|1"), { admit: false, unanswered: "busy" }, "another host waits");
});

t.test("close aborts what still runs after the drain bound", async (t) => {
  const a = new Admission(2);
  a.admit(rrq(), "c1");
  const aborted: string[] = [];
  a.started("c1", {
    abort(message) {
      aborted.push(message);
      a.end("c1");
    },
  });
  await a.close(10);
  t.ok(a.isClosing);
  t.same(aborted, ["Server shutting down"]);
});
