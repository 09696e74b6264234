// TFTP wire format (RFC 1350, options RFC 2347). Parsers return result values and never throw:
// every byte they see comes from an unauthenticated UDP peer.

export const OP_RRQ = 1;
export const OP_WRQ = 2;
export const OP_DATA = 3;
export const OP_ACK = 4;
export const OP_ERROR = 5;
export const OP_OACK = 6;

export const ERR_NOT_DEFINED = 0;
export const ERR_FILE_NOT_FOUND = 1;
export const ERR_ACCESS_VIOLATION = 2;
export const ERR_DISK_FULL = 3;
export const ERR_ILLEGAL_OPERATION = 4;
export const ERR_UNKNOWN_TID = 5;
export const ERR_FILE_EXISTS = 6;
export const ERR_NO_SUCH_USER = 7;
/** RFC 2347: the client refuses the OACK (UEFI does this after a tsize probe). */
export const ERR_OPTION_REFUSED = 8;

export type TftpMode = "octet" | "netascii" | "mail";

export interface TftpRequest {
  op: "RRQ" | "WRQ";
  filename: string;
  mode: TftpMode;
  /** Option names lower-cased (RFC 2347 says they are case-insensitive); first occurrence wins. */
  options: ReadonlyMap<string, string>;
}

export type TftpRequestResult =
  | { ok: true; request: TftpRequest }
  | { ok: false; errorCode: number; reason: string };

export type TftpPacket =
  | { op: "RRQ" | "WRQ"; request: TftpRequest }
  | { op: "DATA"; block: number; data: Buffer }
  | { op: "ACK"; block: number }
  | { op: "ERROR"; code: number; message: string }
  | { op: "OACK"; options: ReadonlyMap<string, string> };

export type TftpPacketResult = { ok: true; packet: TftpPacket } | { ok: false; reason: string };

// Fatal decoding so a name with invalid UTF-8 is refused rather than silently mangled into a
// different name that might match a file.
const utf8 = new TextDecoder("utf-8", { fatal: true });

function decodeText(buf: Buffer): string | undefined {
  try {
    return utf8.decode(buf);
  } catch {
    return undefined;
  }
}

/** Splits `buf` from `start` at NUL bytes; `rest` is what follows the last NUL (unterminated). */
function splitNul(buf: Buffer, start: number): { fields: Buffer[]; rest: Buffer } {
  const fields: Buffer[] = [];
  let from = start;
  for (;;) {
    const end = buf.indexOf(0, from);
    if (end < 0) break;
    fields.push(buf.subarray(from, end));
    from = end + 1;
  }
  return { fields, rest: buf.subarray(from) };
}

function parseOptions(fields: Buffer[]): Map<string, string> {
  const options = new Map<string, string>();
  // Some PXE ROMs pad the request with NUL bytes, and a name without a value can only be a
  // truncated request: both are ignored rather than failing a boot over them.
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const nameBytes = fields[i]!;
    const valueBytes = fields[i + 1]!;
    if (nameBytes.length === 0) continue;
    const name = decodeText(nameBytes)?.toLowerCase();
    const value = decodeText(valueBytes);
    if (name === undefined || value === undefined) continue;
    if (!options.has(name)) options.set(name, value);
  }
  return options;
}

/**
 * Parses a read or write request. Anything else (other opcodes, truncation, unknown mode, a
 * name that is not UTF-8) is a failure result carrying the TFTP error code to answer with.
 */
export function parseTftpRequest(buf: Buffer): TftpRequestResult {
  if (!Buffer.isBuffer(buf) || buf.length < 4) {
    return { ok: false, errorCode: ERR_ILLEGAL_OPERATION, reason: "packet too short" };
  }
  const opcode = buf.readUInt16BE(0);
  if (opcode !== OP_RRQ && opcode !== OP_WRQ) {
    return {
      ok: false,
      errorCode: ERR_ILLEGAL_OPERATION,
      reason: `not a request (opcode ${opcode})`,
    };
  }
  const { fields } = splitNul(buf, 2);
  const nameBytes = fields[0];
  const modeBytes = fields[1];
  if (nameBytes === undefined || modeBytes === undefined) {
    return {
      ok: false,
      errorCode: ERR_ILLEGAL_OPERATION,
      reason: "filename or mode not terminated",
    };
  }
  if (nameBytes.length === 0) {
    return { ok: false, errorCode: ERR_ILLEGAL_OPERATION, reason: "empty filename" };
  }
  const filename = decodeText(nameBytes);
  if (filename === undefined) {
    return { ok: false, errorCode: ERR_ACCESS_VIOLATION, reason: "filename is not valid UTF-8" };
  }
  const mode = decodeText(modeBytes)?.toLowerCase();
  if (mode !== "octet" && mode !== "netascii" && mode !== "mail") {
    return { ok: false, errorCode: ERR_ILLEGAL_OPERATION, reason: "unknown transfer mode" };
  }
  return {
    ok: true,
    request: {
      op: opcode === OP_RRQ ? "RRQ" : "WRQ",
      filename,
      mode,
      options: parseOptions(fields.slice(2)),
    },
  };
}

/** Parses any TFTP packet; used on transfer sockets, where ACK and ERROR are expected. */
export function parseTftpPacket(buf: Buffer): TftpPacketResult {
  if (!Buffer.isBuffer(buf) || buf.length < 4) return { ok: false, reason: "packet too short" };
  const opcode = buf.readUInt16BE(0);
  switch (opcode) {
    case OP_RRQ:
    case OP_WRQ: {
      const r = parseTftpRequest(buf);
      if (!r.ok) return { ok: false, reason: r.reason };
      return { ok: true, packet: { op: r.request.op, request: r.request } };
    }
    case OP_DATA:
      return {
        ok: true,
        packet: { op: "DATA", block: buf.readUInt16BE(2), data: buf.subarray(4) },
      };
    case OP_ACK:
      return { ok: true, packet: { op: "ACK", block: buf.readUInt16BE(2) } };
    case OP_ERROR: {
      const end = buf.indexOf(0, 4);
      const raw = buf.subarray(4, end < 0 ? buf.length : end);
      return {
        ok: true,
        packet: { op: "ERROR", code: buf.readUInt16BE(2), message: raw.toString("latin1") },
      };
    }
    case OP_OACK: {
      const { fields } = splitNul(buf, 2);
      return { ok: true, packet: { op: "OACK", options: parseOptions(fields) } };
    }
    default:
      return { ok: false, reason: `unknown opcode ${opcode}` };
  }
}

/** Only the 4-byte header: the payload is sent alongside it, so cached file bytes are not copied. */
export function encodeDataHeader(block: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt16BE(OP_DATA, 0);
  b.writeUInt16BE(block & 0xffff, 2);
  return b;
}

export function encodeAck(block: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt16BE(OP_ACK, 0);
  b.writeUInt16BE(block & 0xffff, 2);
  return b;
}

export function encodeError(code: number, message: string): Buffer {
  // Messages are netascii on the wire; anything else would be mojibake on the client console.
  const text = Buffer.from(message.replace(/[^\x20-\x7e]/g, "?"), "latin1");
  const b = Buffer.alloc(4 + text.length + 1);
  b.writeUInt16BE(OP_ERROR, 0);
  b.writeUInt16BE(code & 0xffff, 2);
  text.copy(b, 4);
  return b;
}

export function encodeOack(options: ReadonlyArray<readonly [string, string]>): Buffer {
  const parts: Buffer[] = [Buffer.from([0, OP_OACK])];
  for (const [name, value] of options) {
    parts.push(
      Buffer.from(name, "latin1"),
      Buffer.from([0]),
      Buffer.from(value, "latin1"),
      Buffer.from([0]),
    );
  }
  return Buffer.concat(parts);
}
