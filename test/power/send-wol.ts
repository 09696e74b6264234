// Run inside a test's network namespace: sends one magic packet as bootfleet would.
import { wakeOnLan } from "../../src/power/wol.js";

const [mac, source, broadcast] = process.argv.slice(2);
await wakeOnLan({
  mac: mac!,
  sourceAddress: source!,
  broadcast: broadcast!,
  repeat: 3,
  intervalMs: 50,
});
