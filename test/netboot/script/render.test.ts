// biome-ignore-all lint/suspicious/noTemplateCurlyInString: "${...}" in these strings is iPXE syntax, not a JS template
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import type { SanbootData } from "../../../src/netboot/script/kinds.js";
import {
  loadTemplates,
  renderScript,
  type ScriptTemplates,
} from "../../../src/netboot/script/render.js";
import { ScriptValueError } from "../../../src/netboot/script/values.js";

const IPXE_DIR = join(import.meta.dirname, "../../../ipxe");

// iPXE's own reading of a script line (src/core/exec.c): split on whitespace; a token
// starting with "#" ends the line; "||", "&&" and ";" separate commands.
function commands(script: string): string[][] {
  const out: string[][] = [];
  for (const line of script.split("\n")) {
    let cmd: string[] = [];
    for (const token of line.split(/[ \t\f\v\r]+/).filter((x) => x !== "")) {
      if (token.startsWith("#")) break;
      if (token === "||" || token === "&&" || token === ";") {
        out.push(cmd);
        cmd = [];
      } else cmd.push(token);
    }
    out.push(cmd);
  }
  return out;
}

// The shape of a script: its commands with the hex payload of "set x:hex" blanked out.
function shape(script: string): string {
  return commands(script)
    .map((c) => (c[0] === "set" && c[1]?.endsWith(":hex") ? [c[0], c[1], "HEX"] : c).join(" "))
    .join("\n");
}

function setting(script: string, name: string): string | undefined {
  for (const c of commands(script)) {
    if (c[0] === "set" && c[1] === `${name}:hex`) {
      const hex = c[2] ?? "";
      return Buffer.from(
        hex === "" ? [] : hex.split(":").map((h) => Number.parseInt(h, 16)),
      ).toString("utf8");
    }
  }
  return undefined;
}

// What display text must never carry into iPXE: an expansion or a control character.
// biome-ignore lint/suspicious/noControlCharactersInRegex: looking for control characters
const UNSHOWABLE = /\$\{|[\u0000-\u001f]/;

const HOSTILE = [
  "PC-01\nreboot",
  "${password}",
  "x || shell",
  "x && poweroff",
  "# comment",
  "a:b:c",
  "   spaced   out   ",
  "-n --default",
  "Ünïcödé ✓ 中文",
  "\u001b[2J\u001b[Hfake prompt",
  ":bf-start",
  "x ; reboot",
];

function sanboot(over: Partial<SanbootData> = {}): SanbootData {
  return {
    name: "pc-01",
    initiatorIqn: "iqn.2024-01.lan.bootfleet:pc-01",
    chap: { username: "pc-01", password: "Secret-Secret-1" },
    system: { server: "10.99.0.1", lun: 1, targetIqn: "iqn.2024-01.lan.bootfleet:pc-01" },
    ...over,
  };
}

function fieldOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof ScriptValueError) return e.field;
    throw e;
  }
  return undefined;
}

t.test("templates", async (t) => {
  const templates = await loadTemplates(IPXE_DIR);

  t.test("every kind renders a script that starts with #!ipxe, the same every time", async (t) => {
    const cases = {
      sanboot: sanboot(),
      menu: { title: "T", items: [{ label: "a", url: "http://10.0.0.1/a" }] },
      local: { name: "pc" },
      kernel: { name: "pc", kernelUrl: "http://10.0.0.1/vmlinuz" },
      discovery: { mac: "52:54:00:00:00:01", scriptUrl: "http://10.0.0.1/boot/x" },
      custom: { script: "#!ipxe\necho hi\n" },
    } as const;
    for (const [kind, data] of Object.entries(cases)) {
      const a = renderScript(templates, kind as keyof typeof cases, data as never);
      const b = renderScript(templates, kind as keyof typeof cases, structuredClone(data) as never);
      t.ok(a.startsWith("#!ipxe\n"), `${kind} starts with the magic line`);
      t.equal(a, b, `${kind} is deterministic`);
      t.notMatch(a, /\{\{|\}\}/, `${kind} has no template tags left`);
    }
  });

  t.test("hostile free text never changes what iPXE would execute", async (t) => {
    const base = {
      sanboot: shape(renderScript(templates, "sanboot", sanboot())),
      menu: shape(
        renderScript(templates, "menu", {
          title: "T",
          items: [
            { label: "a", url: "http://10.0.0.1/a" },
            { label: "b", url: "http://10.0.0.1/b" },
          ],
        }),
      ),
      local: shape(renderScript(templates, "local", { name: "pc" })),
      kernel: shape(
        renderScript(templates, "kernel", {
          name: "pc",
          kernelUrl: "http://10.0.0.1/k",
          cmdline: "q",
        }),
      ),
      discovery: shape(
        renderScript(templates, "discovery", {
          mac: "52:54:00:00:00:01",
          scriptUrl: "http://10.0.0.1/boot/x",
          message: "m",
        }),
      ),
    };
    for (const evil of HOSTILE) {
      const what = JSON.stringify(evil);
      const s = renderScript(
        templates,
        "sanboot",
        sanboot({ name: evil, chap: { username: evil, password: evil }, mutualChap: undefined }),
      );
      t.equal(shape(s), base.sanboot, `sanboot ${what}`);
      t.equal(setting(s, "password"), evil, `sanboot keeps the secret ${what} exact`);
      t.equal(setting(s, "username"), evil, `sanboot keeps the user ${what} exact`);
      const m = renderScript(templates, "menu", {
        title: evil,
        items: [
          { label: evil, url: "http://10.0.0.1/a" },
          { label: evil, url: "http://10.0.0.1/b" },
        ],
      });
      t.equal(shape(m), base.menu, `menu ${what}`);
      t.equal(shape(renderScript(templates, "local", { name: evil })), base.local, `local ${what}`);
      // biome-ignore lint/suspicious/noControlCharactersInRegex: a cmdline without controls
      const cmdline = evil.replace(/[\u0000-\u001f]/g, " ").replaceAll("${", "$");
      const k = renderScript(templates, "kernel", {
        name: evil,
        kernelUrl: "http://10.0.0.1/k",
        cmdline,
      });
      t.equal(shape(k), base.kernel, `kernel ${what}`);
      t.equal(setting(k, "bf-cmdline"), cmdline, `kernel cmdline ${what} exact`);
      const d = renderScript(templates, "discovery", {
        mac: "52:54:00:00:00:01",
        scriptUrl: "http://10.0.0.1/boot/x",
        message: evil,
      });
      t.equal(shape(d), base.discovery, `discovery ${what}`);
      t.notMatch(setting(d, "bf-message") ?? "", UNSHOWABLE, `shown text defused ${what}`);
    }
  });

  t.test("sanboot: credentials, drives and root paths", async (t) => {
    const s = renderScript(
      templates,
      "sanboot",
      sanboot({
        mutualChap: { username: "target-1", password: "Mutual Secret #2" },
        extraDisks: [
          { server: "10.99.0.2", port: 3261, lun: 10, targetIqn: "iqn.2024-01.lan.bootfleet:data" },
          { server: "10.99.0.1", lun: 0, targetIqn: "eui.02004567A425678D" },
        ],
      }),
    );
    const cmds = commands(s);
    t.same(
      cmds.find((c) => c[0] === "set" && c[1] === "initiator-iqn"),
      ["set", "initiator-iqn", "iqn.2024-01.lan.bootfleet:pc-01"],
    );
    t.equal(setting(s, "reverse-username"), "target-1");
    t.equal(setting(s, "reverse-password"), "Mutual Secret #2");
    t.notOk(
      cmds.some((c) => c[0] === "clear"),
      "mutual CHAP settings are not cleared",
    );
    // Root path grammar: iscsi:<server>:<protocol>:<port>:<LUN>:<target>, LUN read as hex.
    const hooks = cmds.filter((c) => c[0] === "sanhook");
    t.same(hooks, [
      ["sanhook", "--drive", "0x81", "iscsi:10.99.0.2::3261:a:iqn.2024-01.lan.bootfleet:data"],
      ["sanhook", "--drive", "0x82", "iscsi:10.99.0.1::3260:0:eui.02004567A425678D"],
    ]);
    const boot = cmds.findIndex((c) => c[0] === "sanboot");
    t.same(cmds[boot], [
      "sanboot",
      "--drive",
      "0x80",
      "iscsi:10.99.0.1::3260:1:iqn.2024-01.lan.bootfleet:pc-01",
    ]);
    t.ok(
      cmds.findIndex((c) => c[0] === "sanhook") < boot,
      "extra disks are hooked before the system disk boots",
    );
    const unhooks = cmds.filter((c) => c[0] === "sanunhook").map((c) => c[2]);
    t.same(unhooks, ["0x81", "0x82"], "a retry unhooks what it hooked");
    const prompt = cmds.findIndex((c) => c[0] === "prompt");
    t.same(
      cmds.flatMap((c, i) => (c[0] === "reboot" ? [i] : [])),
      [prompt + 1],
      "a failure reboots only when the prompt's key is pressed",
    );
    t.notOk(
      cmds.some((c) => c[0] === "shell"),
      "offers no shell",
    );

    t.equal(setting(s, "hostname"), "pc-01", "the OS gets the machine's name as host name");
    t.equal(
      setting(renderScript(templates, "sanboot", sanboot({ name: "Lab PC 07" })), "hostname"),
      "lab-pc-07",
      "made a valid host name",
    );
    t.equal(
      setting(renderScript(templates, "sanboot", sanboot({ hostname: "ws7.lab" })), "hostname"),
      "ws7.lab",
      "an explicit host name wins",
    );

    const plain = commands(renderScript(templates, "sanboot", sanboot()));
    t.same(
      plain.filter((c) => c[0] === "clear"),
      [
        ["clear", "reverse-username"],
        ["clear", "reverse-password"],
      ],
      "without mutual CHAP, stale reverse credentials are cleared",
    );
  });

  t.test("menu: one item, label and goto target per entry", async (t) => {
    const m = renderScript(templates, "menu", {
      title: "Lab",
      items: [
        { label: "Windows", url: "http://10.0.0.1/boot/t?choice=win" },
        { label: "Linux", url: "http://10.0.0.1/boot/t?choice=linux" },
        { label: "Local", url: "http://10.0.0.1/boot/t?choice=local" },
      ],
      defaultIndex: 2,
      timeoutMs: 5000,
    });
    const cmds = commands(m);
    const items = cmds.filter((c) => c[0] === "item").map((c) => c[1]);
    t.same(items, ["bf-item-0", "bf-item-1", "bf-item-2"]);
    for (const label of items) t.match(m, new RegExp(`^:${label}$`, "m"), `label :${label} exists`);
    t.same(
      cmds.find((c) => c[0] === "choose"),
      ["choose", "--default", "bf-item-2", "--timeout", "5000", "bf-choice"],
    );
    t.same(
      cmds.filter((c) => c[0] === "chain").map((c) => c.at(-1)),
      [
        "http://10.0.0.1/boot/t?choice=win",
        "http://10.0.0.1/boot/t?choice=linux",
        "http://10.0.0.1/boot/t?choice=local",
      ],
    );
    t.equal(setting(m, "bf-item-1"), "Linux");
    const failed = m.slice(m.indexOf("\n:bf-failed\n"));
    t.match(failed, /^autoboot \|\|$/m, "a failed entry asks DHCP for a fresh menu (fresh tokens)");
    t.match(failed, /^goto bf-menu$/m);
  });

  t.test("kernel: initrds named on the command line for the EFI stub", async (t) => {
    const k = renderScript(templates, "kernel", {
      name: "pc",
      kernelUrl: "http://10.0.0.1/img/vmlinuz",
      initrds: [
        { url: "http://10.0.0.1/img/initrd.img" },
        { url: "http://10.0.0.1/img/extra.cpio", name: "extra.cpio" },
      ],
      cmdline: "console=ttyS0",
    });
    const cmds = commands(k);
    t.same(
      cmds.find((c) => c[0] === "kernel"),
      [
        "kernel",
        "--name",
        "bf-kernel",
        "http://10.0.0.1/img/vmlinuz",
        "initrd=initrd0",
        "initrd=extra.cpio",
        "${bf-cmdline:string}",
      ],
    );
    t.same(
      cmds.filter((c) => c[0] === "initrd"),
      [
        ["initrd", "--name", "initrd0", "http://10.0.0.1/img/initrd.img"],
        ["initrd", "--name", "extra.cpio", "http://10.0.0.1/img/extra.cpio"],
      ],
    );
    t.ok(cmds.findIndex((c) => c[0] === "imgfree") < cmds.findIndex((c) => c[0] === "kernel"));
  });

  t.test("local: BIOS boots drive 0x80, UEFI returns to the firmware", async (t) => {
    const cmds = commands(renderScript(templates, "local", { name: "pc" }));
    t.ok(cmds.some((c) => c.join(" ") === "iseq ${platform} efi"));
    t.ok(cmds.some((c) => c.join(" ") === "sanboot --no-describe --drive 0x80"));
    t.ok(cmds.some((c) => c.join(" ") === "exit 1"));
  });

  t.test("discovery: shows the MAC and asks again in a bounded loop", async (t) => {
    const d = renderScript(templates, "discovery", {
      mac: "52-54-00-AB-CD-EF",
      scriptUrl: "http://10.0.0.1/boot/abc",
      retrySeconds: 20,
    });
    t.match(d, /\(52:54:00:ab:cd:ef\)/);
    const cmds = commands(d);
    t.same(
      cmds.filter((c) => c[0] === "sleep"),
      [
        ["sleep", "20"],
        ["sleep", "20"],
      ],
    );
    t.same(
      cmds.find((c) => c[0] === "chain"),
      ["chain", "--replace", "--autofree", "http://10.0.0.1/boot/abc"],
    );
    t.ok(cmds.some((c) => c.join(" ") === "goto bf-wait"));
  });

  t.test("custom: served exactly as written", async (t) => {
    const script = "#!ipxe\r\necho ${net0/mac} || shell\n:x\ngoto x\n";
    t.equal(renderScript(templates, "custom", { script }), script);
    t.equal(
      fieldOf(() => renderScript(templates, "custom", { script: "echo no magic\n" })),
      "script",
    );
    t.equal(
      fieldOf(() => renderScript(templates, "custom", { script: "#!ipxex\n" })),
      "script",
    );
  });

  t.test("bad values are refused, naming the field", async (t) => {
    const f = (fn: () => unknown) => fieldOf(fn);
    t.equal(
      f(() => renderScript(templates, "sanboot", sanboot({ initiatorIqn: "pc 01" }))),
      "initiatorIqn",
    );
    t.equal(
      f(() =>
        renderScript(
          templates,
          "sanboot",
          sanboot({ system: { server: "10.0.0.1", lun: 1, targetIqn: "x" } }),
        ),
      ),
      "system.targetIqn",
    );
    t.equal(
      f(() =>
        renderScript(
          templates,
          "sanboot",
          sanboot({ system: { server: "10.0.0.1\nreboot", lun: 1, targetIqn: "iqn.2024-01.a.b" } }),
        ),
      ),
      "system.server",
    );
    t.equal(
      f(() =>
        renderScript(
          templates,
          "sanboot",
          sanboot({
            extraDisks: [
              { server: "10.0.0.1", lun: 1, targetIqn: "iqn.2024-01.a.b" },
              { server: "10.0.0.1", lun: 300, targetIqn: "iqn.2024-01.a.b" },
            ],
          }),
        ),
      ),
      "extraDisks[1].lun",
    );
    t.equal(
      f(() =>
        renderScript(templates, "sanboot", sanboot({ chap: { username: "u", password: "" } })),
      ),
      "chap.password",
    );
    t.equal(
      f(() =>
        renderScript(templates, "menu", {
          title: "t",
          items: [{ label: "a", url: "http://x/${y}" }],
        }),
      ),
      "items[0].url",
    );
    t.equal(
      f(() => renderScript(templates, "menu", { title: "t", items: [] })),
      "items",
    );
    t.equal(
      f(() =>
        renderScript(templates, "menu", {
          title: "t",
          items: [{ label: "a", url: "http://x/" }],
          defaultIndex: 1,
        }),
      ),
      "defaultIndex",
    );
    t.equal(
      f(() => renderScript(templates, "discovery", { mac: "nope", scriptUrl: "http://x/" })),
      "mac",
    );
    t.equal(
      f(() =>
        renderScript(templates, "kernel", {
          name: "k",
          kernelUrl: "http://x/k",
          cmdline: "a ${b} c",
        }),
      ),
      "cmdline",
    );
  });
});

t.test("templates use ${bf-...:string} only as whole words", async (t) => {
  // A value expanded next to template text could complete a "${" with that text; keep every
  // expansion of our settings bounded by whitespace or ":" (as in "name: ...") on both sides.
  for (const file of await readdir(IPXE_DIR)) {
    // Judge the text around the expansion as rendered: template tags add no characters.
    const src = (await readFile(join(IPXE_DIR, file), "utf8")).replace(/\{\{[^}]*\}\}/g, "");
    for (const m of src.matchAll(/(.)?\$\{bf-[^}]*:string\}(.)?/g)) {
      t.match(m[1] ?? " ", /\s/, `${file}: "${m[0]}" starts a word`);
      t.match(m[2] ?? " ", /[\s:]/, `${file}: "${m[0]}" ends a word`);
    }
  }
});

t.test("loadTemplates refuses a missing or malformed template at load time", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), `bf-script-${process.pid}-`));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await t.rejects(loadTemplates(dir), { code: "ENOENT" }, "empty folder");
  for (const file of await readdir(IPXE_DIR)) {
    await writeFile(join(dir, file), await readFile(join(IPXE_DIR, file)));
  }
  const ok: ScriptTemplates = await loadTemplates(dir);
  t.ok(ok.sanboot && ok.custom);
  await writeFile(join(dir, "menu.ipxe"), "#!ipxe\n{{#items}}\nitem\n");
  await t.rejects(loadTemplates(dir), { name: "TemplateError" }, "unclosed section");
});
