// Times decodeDhcp() on an option bomb and on a real PXE DISCOVER (not a test: timings vary
// with the machine). `npx tsx test/attack/bench-option-bomb.ts`
import { readFileSync } from "node:fs";
import { parseTlv } from "../../src/netboot/dhcp/options.js";
import { decodeDhcp } from "../../src/netboot/dhcp/packet.js";
import { optionBomb } from "./option-bomb.js";

function time(
  label: string,
  buf: Buffer,
  rounds: number,
  decode: (b: Uint8Array) => { ok: true } | { ok: false; error: string } = decodeDhcp,
): void {
  const runs: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    const out = decode(buf);
    runs.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (r === 0)
      console.log(
        `${label}: ${buf.length} bytes, ${out.ok ? "decoded" : `rejected (${out.error})`}`,
      );
  }
  runs.sort((a, b) => a - b);
  console.log(
    `  median ${runs[runs.length >> 1]!.toFixed(3)} ms, max ${runs.at(-1)!.toFixed(3)} ms over ${rounds}`,
  );
}

const hex = readFileSync(
  new URL("../fixtures/dhcp/ipxe-rom-e1000-discover.hex", import.meta.url),
  "utf8",
);
time("iPXE DISCOVER", Buffer.from(hex.replace(/\s+/g, ""), "hex"), 200);
time("option bomb, 21,000 items", optionBomb(21_000), 50);
// The options decoder alone on the same bytes, as if the length bound were not there.
time("options field of the bomb (parseTlv)", optionBomb(21_000).subarray(240), 50, (b) => {
  const r = parseTlv(b);
  return r.ok ? { ok: true } : r;
});
