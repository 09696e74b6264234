// Option negotiation for a read request: RFC 2347 (OACK), 2348 (blksize), 2349 (timeout, tsize),
// 7440 (windowsize).

/** RFC 2348: blksize is valid from 8 to 65464 octets inclusive. */
export const BLKSIZE_MIN = 8;
export const BLKSIZE_MAX = 65464;
export const DEFAULT_BLKSIZE = 512;

/**
 * Largest block that fits in one Ethernet frame on an interface: MTU minus the IPv4 header (20),
 * the UDP header (8) and the TFTP DATA header (4). A bigger block would be fragmented, and a single
 * lost fragment loses the whole block.
 */
export function maxBlksizeForMtu(mtu: number): number {
  if (!Number.isFinite(mtu)) return DEFAULT_BLKSIZE;
  return Math.max(BLKSIZE_MIN, Math.min(BLKSIZE_MAX, Math.floor(mtu) - 20 - 8 - 4));
}

/**
 * Largest retransmission timeout a client may ask for (RFC 2349 allows 1..255 s). A transfer
 * to a silent client holds its slot for timeout × (retries + 1); at 255 s one tiny request
 * held a slot for over 20 minutes.
 */
export const MAX_TIMEOUT_SECONDS = 10;

export interface NegotiationLimits {
  /** Upper bound for blksize (use maxBlksizeForMtu). */
  maxBlksize: number;
  /** Upper bound for windowsize. */
  maxWindowsize: number;
}

export interface NegotiatedOptions {
  blksize: number;
  windowsize: number;
  /** Retransmission timeout in ms when the client set one with the timeout option. */
  timeoutMs: number | undefined;
  /** Pairs to put into the OACK, in the order the client asked; empty means send no OACK. */
  oack: Array<[string, string]>;
}

// Strict decimal: "1e3", " 12", "0x10" or "+5" are not numbers a TFTP client would send.
function parseDecimal(value: string): number | undefined {
  if (!/^[0-9]{1,10}$/.test(value)) return undefined;
  return Number(value);
}

/**
 * Decides what a read request gets. `fileSize` is the number of bytes that will be transferred
 * (after netascii conversion). Unknown or invalid options are left out of the OACK, which RFC 2347
 * defines as refusing them.
 */
export function negotiateOptions(
  requested: ReadonlyMap<string, string>,
  fileSize: number,
  limits: NegotiationLimits,
): NegotiatedOptions {
  const result: NegotiatedOptions = {
    blksize: DEFAULT_BLKSIZE,
    windowsize: 1,
    timeoutMs: undefined,
    oack: [],
  };
  const maxBlksize = Math.max(BLKSIZE_MIN, Math.min(BLKSIZE_MAX, Math.floor(limits.maxBlksize)));
  const maxWindowsize = Math.max(1, Math.min(65535, Math.floor(limits.maxWindowsize)));
  for (const [name, value] of requested) {
    const n = parseDecimal(value);
    if (n === undefined) continue;
    switch (name) {
      case "blksize": {
        // RFC 2348: the server may answer with a smaller value than asked, never a larger one.
        if (n < BLKSIZE_MIN) break;
        result.blksize = Math.min(n, maxBlksize);
        result.oack.push([name, String(result.blksize)]);
        break;
      }
      case "windowsize": {
        if (n < 1 || n > 65535) break;
        result.windowsize = Math.min(n, maxWindowsize);
        result.oack.push([name, String(result.windowsize)]);
        break;
      }
      case "timeout": {
        // RFC 2349: 1..255 seconds, and the OACK must carry the client's value unchanged: a
        // server cannot lower it, so a value above our cap is refused (left out of the OACK)
        // and the server's default timeout applies.
        if (n < 1 || n > MAX_TIMEOUT_SECONDS) break;
        result.timeoutMs = n * 1000;
        result.oack.push([name, String(n)]);
        break;
      }
      case "tsize": {
        // On a RRQ the client sends 0 and the server answers with the size. Not for an empty
        // file: curl (7.88) calls tsize 0 in an OACK invalid and aborts the download, and
        // leaving the option out is how RFC 2347 refuses it; the file still arrives.
        if (fileSize === 0) break;
        result.oack.push([name, String(fileSize)]);
        break;
      }
      default:
        break;
    }
  }
  return result;
}
