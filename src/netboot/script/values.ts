// Everything that reaches an iPXE script from the store passes through this module.
//
// How iPXE reads a script line (src/core/exec.c, src/core/settings.c, checked against the
// Debian 1.0.0+git-20190125 build with real runs in test/netboot/script/):
//   1. the line is split on whitespace, and tokens "||", "&&", ";" and a token starting
//      with "#" are found *before* any expansion;
//   2. then each token is expanded on its own: expand_settings() substitutes "${name}" and
//      rescans the whole result, so a value that contains "${...}" IS expanded again
//      (a machine name "x${password}y" prints the CHAP password);
//   3. options are parsed with getopt, so an argument that begins with "-" is an option
//      until a non-option or "--" is seen.
//
// So there are two ways in for a value, and each has its rule:
//   - grammar values (IQN, IPv4, port, LUN, drive, MAC, our own URLs, numbers) are validated
//     and written literally; they are plain ASCII without whitespace, "$", "{", "}", "#",
//     "|", ";" and cannot start with "-" (scriptToken() checks this again at render time);
//   - free text (names, labels, messages, CHAP secrets, kernel cmdline) is written as
//     colon-separated hex bytes into a setting ("set bf-x:hex 41:42") and read back with
//     "${bf-x:string}". Hex cannot split a line, start a comment or form an operator, and it
//     is stored as bytes without expansion. What remains is step 2 above: text that is
//     later expanded into an argument must not contain "${". Display text gets "${" shown
//     as "$ {"; values that must stay exact (kernel cmdline) are refused instead. CHAP
//     secrets are read by iPXE's iSCSI code straight from the setting, never expanded, so
//     they are passed byte for byte.

/** A value that cannot go into a boot script; `field` names the offending input. */
export class ScriptValueError extends Error {
  readonly field: string;
  constructor(field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "ScriptValueError";
    this.field = field;
  }
}

// A token that iPXE reads as one plain argument: first character alphanumeric (so never an
// option, a label ":x", a comment "#x" or an operator), then only characters with no
// meaning to the iPXE shell or to expand_settings().
const SCRIPT_TOKEN = /^(?:[A-Za-z0-9][A-Za-z0-9._:/?&=%+@,~-]*)?$/;

export function isScriptToken(value: string): boolean {
  return SCRIPT_TOKEN.test(value);
}

function requireString(field: string, value: unknown): string {
  if (typeof value !== "string") throw new ScriptValueError(field, "must be a string");
  return value;
}

function requireInteger(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new ScriptValueError(field, `must be an integer from ${min} to ${max}`);
  }
  return value;
}

// RFC 3720 3.2.6.3: after stringprep (RFC 3722) an iSCSI name holds only lowercase ASCII
// letters, digits, "-", ".", ":"; at most 223 bytes. We accept the ASCII subset only.
const IQN =
  /^iqn\.[0-9]{4}-(?:0[1-9]|1[0-2])\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[a-z0-9.:-]*[a-z0-9])?$/;
const EUI = /^eui\.[0-9A-Fa-f]{16}$/;
const NAA = /^naa\.(?:[0-9A-Fa-f]{16}|[0-9A-Fa-f]{32})$/;

/** An iSCSI name (iqn., eui. or naa. format), as written. */
export function iscsiName(field: string, value: unknown): string {
  const s = requireString(field, value);
  if (s.length > 223) throw new ScriptValueError(field, "iSCSI name longer than 223 bytes");
  if (!IQN.test(s) && !EUI.test(s) && !NAA.test(s)) {
    throw new ScriptValueError(
      field,
      "not an iSCSI name (iqn.yyyy-mm.reversed.domain[:id] in lowercase, eui.<16 hex>, naa.<16|32 hex>)",
    );
  }
  return s;
}

const OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
const IPV4 = new RegExp(`^${OCTET}(?:\\.${OCTET}){3}$`);

/** Dotted-quad IPv4 without leading zeros (inet_aton would read "010" as octal). */
export function ipv4(field: string, value: unknown): string {
  const s = requireString(field, value);
  if (!IPV4.test(s)) throw new ScriptValueError(field, "not a dotted-quad IPv4 address");
  return s;
}

export function port(field: string, value: unknown): string {
  return String(requireInteger(field, value, 1, 65535));
}

/**
 * A LUN as iPXE's root-path parser wants it. scsi_parse_lun() reads each "-"-separated
 * group with strtoul(..., 16): "10" would be LUN 16. We write the single-level peripheral
 * LUN in hex; 0..255 covers one target per machine with a few LUNs.
 */
export function lun(field: string, value: unknown): string {
  return requireInteger(field, value, 0, 255).toString(16);
}

/** A BIOS INT 13h drive number for a hard disk, written as iPXE's --drive wants it. */
export function driveNumber(field: string, value: unknown): string {
  return `0x${requireInteger(field, value, 0x80, 0xff).toString(16)}`;
}

/** A 48-bit MAC in any common spelling, returned as lowercase aa:bb:cc:dd:ee:ff. */
export function macAddress(field: string, value: unknown): string {
  const s = requireString(field, value);
  const m =
    /^([0-9A-Fa-f]{2})[:-]?([0-9A-Fa-f]{2})[:-]?([0-9A-Fa-f]{2})[:-]?([0-9A-Fa-f]{2})[:-]?([0-9A-Fa-f]{2})[:-]?([0-9A-Fa-f]{2})$/.exec(
      s,
    );
  if (!m) throw new ScriptValueError(field, "not a MAC address (six hex bytes)");
  return m.slice(1, 7).join(":").toLowerCase();
}

/**
 * An http(s) URL that we built (image library, script routes). Returned in WHATWG
 * canonical form; it must then be a plain script token, so it holds no fragment, no
 * credentials, no whitespace and nothing iPXE would expand.
 */
export function httpUrl(field: string, value: unknown): string {
  const s = requireString(field, value);
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    throw new ScriptValueError(field, "not a URL");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ScriptValueError(field, "must be an http or https URL");
  }
  if (url.username !== "" || url.password !== "") {
    throw new ScriptValueError(field, "must not carry credentials");
  }
  if (url.hash !== "" || s.includes("#")) {
    throw new ScriptValueError(field, "must not have a fragment");
  }
  const href = url.href;
  if (href.length > 2048 || !isScriptToken(href)) {
    throw new ScriptValueError(field, "has characters that are not allowed in a boot script URL");
  }
  return href;
}

/** A name for an iPXE image ("initrd --name"), as the Linux EFI stub's initrd= sees it. */
export function imageName(field: string, value: unknown): string {
  const s = requireString(field, value);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(s)) {
    throw new ScriptValueError(field, "image name must be 1-64 of A-Z a-z 0-9 . _ - ");
  }
  return s;
}

export function integer(field: string, value: unknown, min: number, max: number): string {
  return String(requireInteger(field, value, min, max));
}

/** Colon-separated lowercase hex of the bytes, the input form of iPXE's ":hex" type. */
export function hexBytes(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(":");
}

function utf8(field: string, s: string, maxBytes: number): Uint8Array {
  // In "u" mode a proper surrogate pair is one code point, so \p{Cs} finds only lone halves.
  if (/\p{Cs}/u.test(s)) throw new ScriptValueError(field, "is not valid Unicode text");
  const bytes = new TextEncoder().encode(s);
  if (bytes.length > maxBytes) {
    throw new ScriptValueError(field, `longer than ${maxBytes} bytes`);
  }
  return bytes;
}

// C0 controls, DEL and C1 controls: on the iPXE console they move the cursor, clear the
// screen or start ANSI sequences, which would let a name draw a fake prompt over a menu.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const CONTROLS = /[\u0000-\u001f\u007f-\u009f]/g;

/**
 * Free text that is only shown (machine name, menu title and labels, messages). Returns
 * the hex for "set NAME:hex ...", to be shown with "${NAME:string}". The text is shown
 * byte for byte except: control characters become "?" and "${" becomes "$ {", because
 * iPXE would expand it again (there is no escape for "$" in iPXE).
 */
export function displayText(field: string, value: unknown, maxBytes = 512): string {
  const s = requireString(field, value);
  const shown = s.replace(CONTROLS, "?").replaceAll("${", "$ {");
  return hexBytes(utf8(field, shown, maxBytes));
}

/**
 * A secret that iPXE reads straight from its setting (iSCSI username/password: iscsi.c
 * fetches them with fetch_string_setting, no expansion). Passed byte for byte; only NUL is
 * refused, since iPXE keeps it as a C string and would cut the secret short.
 */
export function secretText(field: string, value: unknown, maxBytes = 255): string {
  const s = requireString(field, value);
  if (s.length === 0) throw new ScriptValueError(field, "must not be empty");
  if (s.includes("\u0000")) throw new ScriptValueError(field, "must not contain NUL");
  return hexBytes(utf8(field, s, maxBytes));
}

/**
 * Text that must arrive exactly and is expanded into an argument (kernel cmdline). Since
 * iPXE would expand "${" again and no escape exists, such values are refused, not altered;
 * control characters have no place in a command line either.
 */
export function exactArgumentText(field: string, value: unknown, maxBytes: number): string {
  const s = requireString(field, value);
  if (CONTROL.test(s)) throw new ScriptValueError(field, "must not contain control characters");
  if (s.includes("${")) {
    throw new ScriptValueError(field, 'must not contain "${" (iPXE would expand it)');
  }
  return hexBytes(utf8(field, s, maxBytes));
}

/**
 * The host name a booted OS takes from iPXE's `hostname` setting (the iBFT carries it to
 * Linux, DHCP option 12 to the server): a valid name as given, else one DNS label made
 * from free text such as a machine name ("Lab PC 07" becomes "lab-pc-07"), or "" when
 * nothing usable is left (the setting is then cleared). Returned as ":hex" input like all
 * text, though only [a-z0-9.-] can remain.
 */
export function hostName(field: string, value: unknown): string {
  const s = requireString(field, value);
  const valid =
    /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
  const name = valid.test(s)
    ? s.toLowerCase()
    : s
        .toLowerCase()
        .replace(/[^a-z0-9]+/g, "-")
        .slice(0, 63)
        .replace(/^-+|-+$/g, "");
  return hexBytes(new TextEncoder().encode(name));
}
