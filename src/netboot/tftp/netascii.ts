// RFC 764 netascii as TFTP servers apply it to a Unix file: a bare LF becomes CR LF and a bare CR
// becomes CR NUL, so the client can undo both. Files are converted whole because netascii is only
// ever used for small text files (boot firmware always asks for octet).

export function toNetascii(src: Buffer): Buffer {
  let extra = 0;
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    if (c === 0x0a || c === 0x0d) extra++;
  }
  if (extra === 0) return src;
  const out = Buffer.allocUnsafe(src.length + extra);
  let j = 0;
  for (let i = 0; i < src.length; i++) {
    const c = src[i]!;
    if (c === 0x0a) {
      out[j++] = 0x0d;
      out[j++] = 0x0a;
    } else if (c === 0x0d) {
      out[j++] = 0x0d;
      out[j++] = 0x00;
    } else {
      out[j++] = c;
    }
  }
  return out;
}
