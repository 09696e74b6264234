import { execFileSync, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import t from "tap";
import { CommandError, type CommandRunner } from "../../src/host/exec.js";
import { IpmiPower, PowerError, parseState } from "../../src/power/ipmi.js";
import { PowerService } from "../../src/power/service.js";
import { magicPacket, parseMac } from "../../src/power/wol.js";

const isRoot = process.getuid?.() === 0;

t.test("the magic packet is 6 × FF then the MAC 16 times (AMD Magic Packet format)", async (t) => {
  const p = magicPacket("52:54:00:AB:cd:0f");
  t.equal(p.length, 102);
  t.same([...p.subarray(0, 6)], [255, 255, 255, 255, 255, 255]);
  for (let i = 0; i < 16; i++) {
    t.same([...p.subarray(6 + i * 6, 12 + i * 6)], [0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f]);
  }
  t.same([...parseMac("52-54-00-ab-cd-0f")], [0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f]);
  for (const bad of ["52:54:00:ab:cd", "zz:54:00:ab:cd:0f", "52:54:00:ab:cd:0f:11", ""]) {
    t.throws(() => magicPacket(bad), /invalid MAC/);
  }
});

t.test(
  "a receiver on the LAN gets the magic packet broadcast on UDP port 9",
  { skip: isRoot ? false : "needs root: creates network namespaces" },
  async (t) => {
    const a = `bfpwA${process.pid}`;
    const b = `bfpwB${process.pid}`;
    const ip = (...args: string[]) => execFileSync("ip", args, { stdio: "pipe" });
    t.teardown(() => {
      for (const ns of [a, b]) {
        try {
          ip("netns", "del", ns);
        } catch {}
      }
    });
    ip("netns", "add", a);
    ip("netns", "add", b);
    ip(
      "link",
      "add",
      `bfw${process.pid}a`,
      "netns",
      a,
      "type",
      "veth",
      "peer",
      "name",
      `bfw${process.pid}b`,
      "netns",
      b,
    );
    ip("-n", a, "addr", "add", "10.77.0.1/24", "dev", `bfw${process.pid}a`);
    ip("-n", b, "addr", "add", "10.77.0.2/24", "dev", `bfw${process.pid}b`);
    for (const [ns, dev] of [
      [a, `bfw${process.pid}a`],
      [b, `bfw${process.pid}b`],
    ] as const) {
      ip("-n", ns, "link", "set", "lo", "up");
      ip("-n", ns, "link", "set", dev, "up");
    }
    // The receiver is Python's socket module: a peer that is not our code.
    const receiver = spawn(
      "ip",
      [
        "netns",
        "exec",
        b,
        "/usr/bin/python3",
        "-c",
        [
          "import socket,sys",
          "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)",
          "s.bind(('0.0.0.0',9))",
          "s.settimeout(20)",
          "print('ready',flush=True)",
          "d,a=s.recvfrom(2048)",
          "print(d.hex(),a[0],flush=True)",
        ].join("\n"),
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    t.teardown(() => {
      if (receiver.exitCode === null) receiver.kill("SIGKILL");
    });
    let out = "";
    receiver.stdout.setEncoding("utf8");
    const got = new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no packet; receiver said: ${out}`)), 30_000);
      receiver.stdout.on("data", (s: string) => {
        out += s;
        const line = out.split("\n").find((l) => /^[0-9a-f]{20,}/.test(l));
        if (line) {
          clearTimeout(timer);
          resolve(line);
        }
      });
    });
    const deadline = Date.now() + 10_000;
    while (!out.includes("ready") && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    const sender = fileURLToPath(new URL("./send-wol.ts", import.meta.url));
    execFileSync(
      "ip",
      [
        "netns",
        "exec",
        a,
        process.execPath,
        "--import",
        "tsx",
        sender,
        "52:54:00:12:34:56",
        "10.77.0.1",
        "255.255.255.255",
      ],
      { timeout: 30_000, stdio: "pipe" },
    );
    const [hex, from] = (await got).split(" ");
    t.equal(hex, `${"ff".repeat(6)}${"525400123456".repeat(16)}`);
    t.equal(from, "10.77.0.1", "sent from the given interface address");
  },
);

function recordingRunner(reply: { code: number; stdout?: string; stderr?: string }) {
  const calls: { command: string; args: readonly string[]; env: NodeJS.ProcessEnv }[] = [];
  const run: CommandRunner = async (command, args, opts) => {
    calls.push({ command, args, env: opts?.env ?? {} });
    const out = { stdout: reply.stdout ?? "", stderr: reply.stderr ?? "" };
    // Like the real runner, but without its redaction: IpmiPower must scrub on its own too.
    if (reply.code !== 0) throw new CommandError(command, args, { code: reply.code, ...out });
    return out;
  };
  return { run, calls };
}

const bmc = { address: "10.0.0.50", username: "ADMIN", password: "s3cr3t-pw" };

t.test(
  "IPMI (recorded runner, no BMC here): lanplus with the password only in IPMI_PASSWORD",
  async (t) => {
    const { run, calls } = recordingRunner({ code: 0, stdout: "Chassis Power is on\n" });
    const ipmi = new IpmiPower({ run, baseEnv: { PATH: "/usr/bin:/bin" } });
    const r = await ipmi.power(bmc, "query");
    t.equal(r.state, "on");
    t.equal(calls[0]?.command, "ipmitool");
    t.same(calls[0]?.args, [
      "-I",
      "lanplus",
      "-H",
      "10.0.0.50",
      "-U",
      "ADMIN",
      "-E",
      "chassis",
      "power",
      "status",
    ]);
    t.equal(calls[0]?.env.IPMI_PASSWORD, "s3cr3t-pw");
    t.equal(calls[0]?.env.PATH, "/usr/bin:/bin");
    t.notOk(
      calls[0]?.args.some((a) => a.includes("s3cr3t")),
      "never on the command line",
    );
    for (const [action, word] of [
      ["on", "on"],
      ["off", "off"],
      ["cycle", "cycle"],
    ] as const) {
      await ipmi.power(bmc, action);
      t.equal(calls.at(-1)?.args.at(-1), word);
    }
  },
);

t.test(
  "IPMI (recorded runner, no BMC here): errors name the BMC but never the password",
  async (t) => {
    const { run } = recordingRunner({
      code: 1,
      stderr: "Error: Unable to establish IPMI v2 / RMCP+ session (password s3cr3t-pw rejected)\n",
    });
    const ipmi = new IpmiPower({ run });
    const err = await ipmi.power(bmc, "on").catch((e) => e);
    t.type(err, PowerError);
    t.match(err.message, /10\.0\.0\.50/);
    t.notMatch(err.message, /s3cr3t/);
    for (const evil of ["-oProxyCommand=x", "a b", ""]) {
      const e = await ipmi.power({ ...bmc, address: evil }, "on").catch((x) => x);
      t.match(e.message, /invalid BMC address/, JSON.stringify(evil));
    }
    const e2 = await ipmi.power({ ...bmc, username: "-E" }, "on").catch((x) => x);
    t.match(e2.message, /invalid BMC user/);
  },
);

t.test("parseState reads ipmitool's chassis power status", async (t) => {
  t.equal(parseState("Chassis Power is off\n"), "off");
  t.equal(parseState("Chassis Power is on\n"), "on");
  t.equal(parseState("garbage"), "unknown");
});

t.test(
  "PowerService: BMC when there is one, Wake-on-LAN for on otherwise, refusal for off",
  async (t) => {
    const { run, calls } = recordingRunner({ code: 0, stdout: "Chassis Power is off\n" });
    const woken: string[] = [];
    const svc = new PowerService({
      ipmi: new IpmiPower({ run }),
      wake: async (mac) => {
        woken.push(mac);
      },
    });
    const plain = {
      mac_address: "52:54:00:00:00:09",
      bmc_address: null,
      bmc_username: null,
      bmc_password: null,
    };
    t.same(await svc.act(plain, "on"), { method: "wol", action: "on", state: "unknown" });
    t.same(woken, ["52:54:00:00:00:09"]);
    await t.rejects(svc.act(plain, "off"), /needs a BMC/);
    const withBmc = { ...plain, bmc_address: "10.0.0.9", bmc_username: "u", bmc_password: "p" };
    t.same(await svc.act(withBmc, "query"), { method: "ipmi", action: "query", state: "off" });
    t.equal(calls.length, 1);
  },
);
