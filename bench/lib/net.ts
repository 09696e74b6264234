// A TCP port the benches can give a server they start.

import { createServer } from "node:net";

/** A port free on `host` right now (the kernel picks it; the server binds it just after). */
export function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, host, () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}
