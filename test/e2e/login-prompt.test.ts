import t from "tap";
import { loginPrompt } from "../helpers/diskless-lab.js";

// The serial console of a full run's second boot of lab-pc-b (test/e2e/debian-boot): a kernel
// line landed between getty's host name and its "login:", and the test waited 15 minutes
// for a prompt that was on the screen.
const interleaved = [
  "",
  "Debian GNU/Linux 12 lab-pc-b ttyS0",
  "",
  "lab-pc-b [  116.312842] SVM: PMU virtualization is disabled",
  "login: root (automatic login)",
].join("\n");

t.test("a login prompt is found with kernel lines printed into it", async (t) => {
  t.ok(loginPrompt("lab-pc-b").test(interleaved), "the interleaved prompt");
  t.ok(loginPrompt("lab-pc-b").test("\nlab-pc-b login: "), "a plain one");
  t.notOk(loginPrompt("lab-pc-a").test(interleaved), "not another machine's name");
  t.notOk(
    loginPrompt("lab-pc-b").test("\nlab-pc-b [  116.312842] SVM: PMU virtualization is disabled\n"),
    "not a host name with no prompt after it",
  );
});
