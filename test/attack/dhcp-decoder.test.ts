// An option bomb (thousands of repeats of one option, RFC 3396 concatenation) must cost the
// decoder work in proportion to its size, and a datagram longer than any DHCP message is
// refused before its options are read. Work is counted as bytes the decoder allocates, not
// timed: the old decoder concatenated the value so far at every repeat (1 + 2 + ... + n).
import t from "tap";
import { parseTlv } from "../../src/netboot/dhcp/options.js";
import { decodeDhcp, MAX_MESSAGE_LENGTH } from "../../src/netboot/dhcp/packet.js";
import { optionBomb } from "./option-bomb.js";

/** Runs fn and returns the bytes every Buffer made meanwhile holds, summed. */
function bytesAllocated(fn: () => void): number {
  let total = 0;
  const B = Buffer as unknown as Record<string, (...a: unknown[]) => Buffer>;
  const names = ["alloc", "allocUnsafe", "allocUnsafeSlow", "from", "concat"] as const;
  const saved = names.map((n) => [n, B[n]!] as const);
  for (const [n, orig] of saved) {
    B[n] = (...a: unknown[]) => {
      const out = orig.apply(Buffer, a);
      total += out.length;
      return out;
    };
  }
  try {
    fn();
  } finally {
    for (const [n, orig] of saved) B[n] = orig;
  }
  return total;
}

t.test("decoding repeats of one option allocates in proportion to the input", async (t) => {
  for (const items of [5_000, 10_000, 20_000]) {
    const field = optionBomb(items).subarray(240);
    let value: Buffer | undefined;
    const bytes = bytesAllocated(() => {
      const r = parseTlv(field);
      value = r.ok ? r.options.get(77) : undefined;
    });
    t.equal(value?.length, items, `${items} one-byte repeats concatenate to ${items} bytes`);
    // The value itself is items bytes; the old decoder made items * (items + 1) / 2.
    t.ok(
      bytes <= 2 * field.length,
      `${items} repeats: ${bytes} bytes allocated for a ${field.length}-byte field`,
    );
  }
});

t.test("a bomb that fits the length bound decodes with linear work", async (t) => {
  const small = optionBomb(200);
  const large = optionBomb(400);
  t.ok(large.length <= MAX_MESSAGE_LENGTH, "the larger bomb is still a legal length");
  const cost = (b: Buffer) =>
    bytesAllocated(() => {
      const r = decodeDhcp(b);
      if (!r.ok) throw new Error(r.error);
    });
  const a = cost(small);
  const b = cost(large);
  // Twice the input, about twice the work (the header fields are a fixed part).
  t.ok(b <= 2.2 * a, `200 items: ${a} bytes, 400 items: ${b} bytes`);
});

t.test("a datagram longer than any DHCP message is refused before its options", async (t) => {
  const bomb = optionBomb(21_000);
  let r: ReturnType<typeof decodeDhcp> | undefined;
  const bytes = bytesAllocated(() => {
    r = decodeDhcp(bomb);
  });
  t.equal(r?.ok, false, "refused");
  t.match(r && !r.ok && r.error, /too long: 63241 bytes/);
  t.equal(bytes, 0, "nothing copied");
  const edge = optionBomb(Math.floor((MAX_MESSAGE_LENGTH - 241) / 3));
  t.ok(decodeDhcp(edge).ok, `a ${edge.length}-byte message still decodes`);
  const over = Buffer.concat([edge, Buffer.alloc(MAX_MESSAGE_LENGTH + 1 - edge.length)]);
  t.equal(decodeDhcp(over).ok, false, `${over.length} bytes are refused`);
});
