import type { Readable, Writable } from "node:stream";

/**
 * Reads a password from stdin. Piped in, it is the first line (so `echo pw |` and a
 * file both work); on a terminal the user is prompted and nothing is echoed.
 */
export async function readPassword(
  input: Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown },
  prompt: Writable,
  label = "Password: ",
): Promise<string> {
  if (input.isTTY && input.setRawMode) return readFromTerminal(input, prompt, label);
  const chunks: Buffer[] = [];
  for await (const chunk of input) chunks.push(Buffer.from(chunk as Buffer));
  return (Buffer.concat(chunks).toString("utf8").split(/\r?\n/)[0] ?? "").normalize("NFC");
}

function readFromTerminal(
  input: Readable & { setRawMode?: (raw: boolean) => unknown },
  prompt: Writable,
  label: string,
): Promise<string> {
  prompt.write(label);
  input.setRawMode!(true);
  input.resume();
  return new Promise((resolve, reject) => {
    let value = "";
    const done = (err?: Error) => {
      input.setRawMode!(false);
      input.pause();
      input.off("data", onData);
      prompt.write("\n");
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (buf: Buffer) => {
      for (const ch of buf.toString("utf8")) {
        if (ch === "\r" || ch === "\n") return done();
        if (ch === "\u0003" || ch === "\u0004") return done(new Error("cancelled"));
        if (ch === "\u007f" || ch === "\b") value = value.slice(0, -1);
        else value += ch;
      }
    };
    input.on("data", onData);
  });
}
