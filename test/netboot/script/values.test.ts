// biome-ignore-all lint/suspicious/noTemplateCurlyInString: "${...}" in these strings is iPXE syntax, not a JS template
import t, { type Test } from "tap";
import {
  displayText,
  driveNumber,
  exactArgumentText,
  hostName,
  httpUrl,
  imageName,
  ipv4,
  iscsiName,
  isScriptToken,
  lun,
  macAddress,
  port,
  ScriptValueError,
  secretText,
} from "../../../src/netboot/script/values.js";

// What iPXE's ":hex" type stores: colon-separated byte pairs. Decoded here independently.
function unhex(hex: string): Buffer {
  return hex === ""
    ? Buffer.alloc(0)
    : Buffer.from(hex.split(":").map((h) => Number.parseInt(h, 16)));
}

function refuses(tt: Test, fn: () => unknown, field: string, what: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  tt.ok(caught instanceof ScriptValueError, `${what}: refused with ScriptValueError`);
  tt.equal((caught as ScriptValueError | undefined)?.field, field, `${what}: names ${field}`);
}

t.test("iSCSI names: RFC 3720 3.2.6.3 examples pass, others are refused", async (tt) => {
  // Examples from RFC 3720 section 3.2.6.3.1 and 3.2.6.3.2.
  for (const name of [
    "iqn.2001-04.com.example:storage:diskarrays-sn-a8675309",
    "iqn.2001-04.com.example",
    "iqn.2001-04.com.example:storage.tape1.sys1.xyz",
    "iqn.2001-04.com.example.storage:tape1.sys1.xyz",
    "eui.02004567A425678D",
    "naa.52004567BA64678D",
    "naa.62004567BA64678D0123456789ABCDEF",
  ]) {
    tt.equal(iscsiName("iqn", name), name, name);
  }
  for (const bad of [
    "iqn.2001-04.com.Example", // RFC 3722 maps to lowercase: upper case is not canonical
    "iqn.2001-13.com.example",
    "iqn.01-04.com.example",
    "iqn.2001-04.com.example:a b",
    "iqn.2001-04.com.example:a\nsanboot",
    "iqn.2001-04.com.example:${password}",
    "iqn.2001-04.com.example:x||y",
    "iqn.2001-04.-bad.example",
    "eui.02004567A425678",
    "naa.52004567BA64678DAA",
    "",
    `iqn.2001-04.com.example:${"a".repeat(210)}`,
  ]) {
    refuses(tt, () => iscsiName("targetIqn", bad), "targetIqn", JSON.stringify(bad));
  }
  refuses(tt, () => iscsiName("targetIqn", 42), "targetIqn", "non-string");
});

t.test("IPv4: dotted quads only, no octal-looking leading zeros", async (tt) => {
  tt.equal(ipv4("server", "10.99.0.1"), "10.99.0.1");
  tt.equal(ipv4("server", "255.255.255.255"), "255.255.255.255");
  for (const bad of ["10.99.0", "10.99.0.256", "010.1.1.1", "10.0.0.1 ", "::1", "a.b.c.d"]) {
    refuses(tt, () => ipv4("server", bad), "server", JSON.stringify(bad));
  }
});

t.test("port, drive and LUN numbers", async (tt) => {
  tt.equal(port("port", 3260), "3260");
  refuses(tt, () => port("port", 0), "port", "0");
  refuses(tt, () => port("port", 65536), "port", "65536");
  refuses(tt, () => port("port", 32.5), "port", "fraction");
  refuses(tt, () => port("port", "3260"), "port", "string");
  tt.equal(driveNumber("drive", 0x81), "0x81");
  refuses(tt, () => driveNumber("drive", 0x7f), "drive", "floppy range");
  // iPXE's scsi_parse_lun() reads the LUN with strtoul(..., 16): decimal 10 must be "a".
  tt.equal(lun("lun", 0), "0");
  tt.equal(lun("lun", 1), "1");
  tt.equal(Number.parseInt(lun("lun", 10), 16), 10);
  tt.equal(Number.parseInt(lun("lun", 255), 16), 255);
  refuses(tt, () => lun("lun", 256), "lun", "256");
  refuses(tt, () => lun("lun", -1), "lun", "-1");
});

t.test("MAC addresses in common spellings become aa:bb:cc:dd:ee:ff", async (tt) => {
  for (const spelling of ["52:54:00:AB:cd:01", "52-54-00-ab-cd-01", "525400abcd01"]) {
    tt.equal(macAddress("mac", spelling), "52:54:00:ab:cd:01", spelling);
  }
  for (const bad of ["52:54:00:ab:cd", "52:54:00:ab:cd:0g", "52:54:00:ab:cd:01:02", ""]) {
    refuses(tt, () => macAddress("mac", bad), "mac", JSON.stringify(bad));
  }
});

t.test("URLs: http(s) only, canonical, nothing iPXE would split or expand", async (tt) => {
  tt.equal(
    httpUrl("url", "http://10.0.0.1:8080/boot/a?b=1&c=2"),
    "http://10.0.0.1:8080/boot/a?b=1&c=2",
  );
  tt.equal(httpUrl("url", "http://10.0.0.1/img/a%20b"), "http://10.0.0.1/img/a%20b");
  // WHATWG canonical form: the space is percent-encoded (RFC 3986 2.1), the same resource.
  tt.equal(httpUrl("url", "http://10.0.0.1/a b"), "http://10.0.0.1/a%20b");
  for (const bad of [
    "tftp://10.0.0.1/x",
    "file:///etc/passwd",
    "http://user:pw@10.0.0.1/x",
    "http://10.0.0.1/x#frag",
    "http://10.0.0.1/${password}",
    "http://10.0.0.1/a||b",
    "not a url",
  ]) {
    refuses(tt, () => httpUrl("kernelUrl", bad), "kernelUrl", JSON.stringify(bad));
  }
});

t.test("image names for initrd --name", async (tt) => {
  tt.equal(imageName("n", "initrd.img-6.1"), "initrd.img-6.1");
  refuses(tt, () => imageName("n", "-x"), "n", "leading dash");
  refuses(tt, () => imageName("n", "a/b"), "n", "slash");
});

t.test("script tokens: what may stand in a script line unencoded", async (tt) => {
  for (const ok of ["", "0x81", "iqn.2001-04.com.example:x", "41:42", "http://a/b?c=d&e=f"]) {
    tt.ok(isScriptToken(ok), JSON.stringify(ok));
  }
  for (const bad of [
    "-n",
    "--",
    "#x",
    ":label",
    "||",
    "&&",
    ";",
    "a b",
    "a\nb",
    "${x}",
    "a$b",
    "a}",
    "é",
  ]) {
    tt.notOk(isScriptToken(bad), JSON.stringify(bad));
  }
});

t.test("display text: hex of the UTF-8 bytes, controls and ${ defused", async (tt) => {
  const plain = "PC 01 || reboot && shell # x ; \"q\" 'q' Ünïcödé ✓";
  const hex = displayText("name", plain);
  tt.ok(isScriptToken(hex), "the encoding is a plain token");
  tt.equal(unhex(hex).toString("utf8"), plain, "bytes survive exactly");
  // The two documented changes: a control character shows as "?", "${" as "$ {".
  tt.equal(unhex(displayText("name", "a\nreboot\tb\u001b[2Jc")).toString(), "a?reboot?b?[2Jc");
  tt.equal(unhex(displayText("name", "x${password}y")).toString(), "x$ {password}y");
  tt.equal(unhex(displayText("name", "$${a}")).toString(), "$$ {a}");
  tt.notMatch(unhex(displayText("name", "${${${x}}}")).toString(), /\$\{/);
  tt.equal(displayText("name", ""), "");
  refuses(tt, () => displayText("name", "x".repeat(513)), "name", "too long");
  refuses(tt, () => displayText("name", "\ud800"), "name", "lone surrogate");
  refuses(tt, () => displayText("name", null), "name", "null");
});

t.test("secrets pass byte for byte; only NUL and empty are refused", async (tt) => {
  const secret = "p@ss word ${password} || # ; \n ü";
  tt.equal(unhex(secretText("chap.password", secret)).toString("utf8"), secret);
  refuses(tt, () => secretText("chap.password", ""), "chap.password", "empty");
  refuses(tt, () => secretText("chap.password", "a\u0000b"), "chap.password", "NUL");
  refuses(tt, () => secretText("chap.password", "x".repeat(256)), "chap.password", "too long");
});

t.test("exact arguments (kernel cmdline): exact or refused, never altered", async (tt) => {
  const cmdline = 'console=ttyS0 root=/dev/nfs a||b && c # d ; "q" ü';
  tt.equal(unhex(exactArgumentText("cmdline", cmdline, 2048)).toString("utf8"), cmdline);
  refuses(tt, () => exactArgumentText("cmdline", "a ${x} b", 2048), "cmdline", "${");
  refuses(tt, () => exactArgumentText("cmdline", "a\nb", 2048), "cmdline", "newline");
  refuses(tt, () => exactArgumentText("cmdline", "x".repeat(2049), 2048), "cmdline", "too long");
});

t.test("host names: a valid one as given, else one DNS label made from the text", async (tt) => {
  const name = (v: string) => unhex(hostName("hostname", v)).toString("utf8");
  tt.equal(name("lab-pc-07"), "lab-pc-07");
  tt.equal(name("PC07.lab.example"), "pc07.lab.example", "a valid FQDN stays, in lowercase");
  tt.equal(name("Lab PC 07"), "lab-pc-07");
  tt.equal(name("x${password} || reboot"), "x-password-reboot");
  tt.equal(name("-n --default"), "n-default", "never starts with a dash");
  tt.equal(name("中文"), "", "nothing usable: empty, which clears the setting");
  tt.equal(name("a".repeat(80)).length, 63, "one label at most");
  refuses(tt, () => hostName("hostname", 7), "hostname", "a number");
});
