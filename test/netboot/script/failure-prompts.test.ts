// biome-ignore-all lint/suspicious/noTemplateCurlyInString: "${...}" in these strings is iPXE syntax, not a JS template
// No boot script bootfleet renders leaves the person at the PC at an iPXE shell: from a
// shell, "show password" prints the CHAP secret of a sanboot script, and "chain" runs
// anything. A failure offers a retry or a reboot instead.
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import t from "tap";
import {
  SCRIPT_KINDS,
  type ScriptData,
  type ScriptKind,
} from "../../../src/netboot/script/kinds.js";
import { loadTemplates, renderScript } from "../../../src/netboot/script/render.js";

const IPXE_DIR = join(import.meta.dirname, "../../../ipxe");

// iPXE's reading of a script line (src/core/exec.c): whitespace separates words, a word
// starting with "#" ends the line, "||", "&&" and ";" separate commands.
function lines(script: string): string[][][] {
  return script.split("\n").map((line) => {
    const cmds: string[][] = [[]];
    for (const word of line.split(/[ \t\f\v\r]+/).filter((w) => w !== "")) {
      if (word.startsWith("#")) break;
      if (word === "||" || word === "&&" || word === ";") cmds.push([]);
      else cmds.at(-1)!.push(word);
    }
    return cmds.filter((c) => c.length > 0);
  });
}

const commandNames = (script: string) => lines(script).flatMap((l) => l.map((c) => c[0]!));

// Every section of every template is rendered: mutual CHAP and extra disks, initrds, items.
const DATA: { [K in Exclude<ScriptKind, "custom">]: ScriptData[K] } = {
  sanboot: {
    name: "pc-01",
    initiatorIqn: "iqn.2024-01.lan.bootfleet:pc-01",
    chap: { username: "pc-01", password: "Secret-Secret-1" },
    mutualChap: { username: "bootfleet", password: "Other-Secret-2" },
    system: { server: "10.99.0.1", lun: 1, targetIqn: "iqn.2024-01.lan.bootfleet:pc-01" },
    extraDisks: [{ server: "10.99.0.1", lun: 2, targetIqn: "iqn.2024-01.lan.bootfleet:pc-01" }],
  },
  menu: {
    title: "Boot",
    items: [
      { label: "a", url: "http://10.99.0.1/a" },
      { label: "b", url: "http://10.99.0.1/b" },
    ],
  },
  local: { name: "pc-01" },
  kernel: {
    name: "pc-01",
    kernelUrl: "http://10.99.0.1/vmlinuz",
    initrds: [{ url: "http://10.99.0.1/initrd" }],
    cmdline: "quiet",
  },
  discovery: { mac: "52:54:00:00:00:01", scriptUrl: "http://10.99.0.1/boot/x", message: "hi" },
};

t.test("no rendered script can reach an iPXE shell", async (t) => {
  const templates = await loadTemplates(IPXE_DIR);
  for (const kind of SCRIPT_KINDS) {
    if (kind === "custom") continue;
    const text = renderScript(templates, kind, DATA[kind] as never);
    const names = commandNames(text);
    t.ok(names.length > 3, `${kind} has commands`);
    t.notOk(names.includes("shell"), `${kind}: no shell command`);
    t.notMatch(text, /shell/i, `${kind}: does not mention a shell`);
  }
  // The admin's own script is served as written: bootfleet adds nothing to it.
  const custom = "#!ipxe\necho hi\n";
  t.equal(renderScript(templates, "custom", { script: custom }), custom, "custom is verbatim");
});

t.test("no template names the shell command in any section", async (t) => {
  const files = (await readdir(IPXE_DIR)).filter((f) => f.endsWith(".ipxe"));
  t.ok(files.length >= SCRIPT_KINDS.length, "every template is checked");
  for (const f of files) {
    // Comments ({{! ... }}) may explain why there is no shell; code may not call one.
    const code = (await readFile(join(IPXE_DIR, f), "utf8")).replace(/\{\{![\s\S]*?\}\}/g, "");
    t.notOk(commandNames(code).includes("shell"), `${f}: no shell command`);
  }
});

t.test("a failure offers a reboot on a key and otherwise retries", async (t) => {
  const templates = await loadTemplates(IPXE_DIR);
  for (const kind of ["sanboot", "kernel"] as const) {
    const script = lines(renderScript(templates, kind, DATA[kind] as never));
    const failed = script.findIndex((l) => l[0]?.[0] === ":bf-failed");
    t.ok(failed > 0, `${kind} has a failure label`);
    const after = script.slice(failed);
    const prompt = after.find((l) => l[0]?.[0] === "prompt");
    t.ok(prompt, `${kind}: the failure prompts`);
    // prompt --key r ... && reboot ||: the reboot runs only when r was pressed.
    t.same(prompt?.[0]?.slice(0, 3), ["prompt", "--key", "r"], `${kind}: r is the key`);
    t.same(prompt?.slice(1), [["reboot"]], `${kind}: pressing it reboots`);
    t.match(prompt?.[0]?.join(" "), /press r to reboot.*retry/, `${kind}: says so`);
    const back = after.slice(after.indexOf(prompt!) + 1).find((l) => l[0]?.[0] === "goto");
    t.same(back?.[0], ["goto", "bf-start"], `${kind}: otherwise back to the start`);
    const reboots = script.filter((l) => l.some((c) => c[0] === "reboot"));
    t.same(reboots, [prompt], `${kind}: no reboot other than the prompted one`);
  }
  for (const [kind, label] of [
    ["discovery", "bf-wait"],
    ["menu", "bf-menu"],
  ] as const) {
    const names = lines(renderScript(templates, kind, DATA[kind] as never)).flat();
    t.ok(
      names.some((c) => c[0] === "goto" && c[1] === label),
      `${kind}: a failure goes back to ${label} (after asking DHCP again)`,
    );
  }
});
