import t from "tap";
import {
  CommandError,
  commandRunner,
  describeCommand,
  REDACTED,
  redact,
  runChecked,
  runProcess,
} from "../../src/host/exec.js";

t.test("arguments reach the program verbatim, never through a shell", async (t) => {
  const run = commandRunner({ timeoutMs: 10_000 });
  const { stdout } = await run("printf", ["%s|", "a b", "$(id)", ";rm"]);
  t.equal(stdout, "a b|$(id)|;rm|");
});

t.test("failures are CommandErrors that say how the command ended", async (t) => {
  const run = commandRunner({ timeoutMs: 10_000 });
  const missing = await run("bf-no-such-program", []).catch((e: unknown) => e);
  t.ok(missing instanceof CommandError && missing.exitCode === "ENOENT", "a missing program");
  t.match((missing as Error).message, /bf-no-such-program is not installed/);

  const failed = await run("ls", ["/bf-no-such-path"]).catch((e: unknown) => e);
  t.ok(failed instanceof CommandError && failed.exitCode === 2, "a non-zero exit");
  t.match((failed as CommandError).stderr, /No such file/);
  t.match((failed as CommandError).detail, /No such file/, "detail is the end of stderr");
  t.match((failed as Error).message, /^ls \/bf-no-such-path exited with code 2: .*No such file/);

  const slow = await runChecked("sleep", ["30"], { timeoutMs: 200, killGraceMs: 0 }).catch(
    (e: unknown) => e,
  );
  t.ok(slow instanceof CommandError && slow.killed === "timeout", "a timeout kills it");
  t.match((slow as Error).message, /sleep 30 timed out/);
});

t.test("an abort ends the process: SIGTERM first", async (t) => {
  const ac = new AbortController();
  const running = runProcess("sleep", ["30"], { signal: ac.signal });
  ac.abort();
  const r = await running;
  t.equal(r.killed, "aborted");
  t.equal(r.signal, "SIGTERM");
  const err = await runChecked("sleep", ["30"], { signal: ac.signal }).catch((e: unknown) => e);
  t.match((err as Error).message, /was cancelled/, "an already aborted signal starts nothing");
});

t.test("stdin is written and closed; without it the child reads an empty input", async (t) => {
  t.equal(
    (await runChecked("cat", [], { stdin: "line one\nline two\n" })).stdout,
    "line one\nline two\n",
  );
  t.equal((await runChecked("cat", [])).stdout, "", "no hang waiting for input");
});

t.test("output beyond the limit is cut, and a checked run refuses it", async (t) => {
  const r = await runProcess("head", ["-c", "5000", "/dev/zero"], { maxOutputChars: 1000 });
  t.equal(r.code, 0);
  t.equal(r.stdout.length, 1000);
  t.equal(r.truncated, true);
  const err = await runChecked("head", ["-c", "5000", "/dev/zero"], {
    maxOutputChars: 1000,
  }).catch((e: unknown) => e);
  t.ok(err instanceof CommandError, "a half report is not parsed as a whole one");
});

t.test("the child gets only PATH unless given an environment", async (t) => {
  process.env.BF_EXEC_TEST_SECRET = "should-not-leak";
  t.teardown(() => {
    delete process.env.BF_EXEC_TEST_SECRET;
  });
  const inherited = (await runChecked("env", [])).stdout;
  t.notMatch(inherited, /BF_EXEC_TEST_SECRET/);
  t.match(inherited, /^PATH=/m);
  const given = (await runChecked("env", [], { env: { PATH: "/usr/bin:/bin", X: "1" } })).stdout;
  t.match(given, /^X=1$/m);
});

t.test("one redaction rule: secrets leave no trace in an error", async (t) => {
  t.equal(
    redact("--password s3cretvalue99 x s3cretvalue99", ["s3cretvalue99", ""]),
    `--password ${REDACTED} x ${REDACTED}`,
  );
  t.equal(
    describeCommand("tgtadm", ["--password", "pw-123456789"], ["pw-123456789"]),
    `tgtadm --password ${REDACTED}`,
  );
  const secret = "chap-secret-42";
  const err = await runChecked("sh", ["-c", `echo "bad password ${secret}" >&2; exit 3`, secret], {
    secrets: [secret],
  }).catch((e: unknown) => e);
  t.ok(err instanceof CommandError);
  const e = err as CommandError;
  t.equal(e.exitCode, 3);
  for (const [what, text] of [
    ["message", e.message],
    ["stderr", e.stderr],
    ["detail", e.detail],
    ["args", e.args.join(" ")],
  ] as const) {
    t.notMatch(text, secret, `${what} holds no secret`);
  }
  t.match(e.stderr, `bad password ${REDACTED}`);
});
