// bootfleet's TFTP server in a process of its own for the benchmark, so the load generator does
// not share its event loop. Args: JSON {root, port, aliases, shareFiles, logFile}. Prints "ready".

import pino from "pino";
import { maxBlksizeForMtu } from "../../src/netboot/tftp/options.js";
import { createTftpServer } from "../../src/netboot/tftp/server.js";

const cfg = JSON.parse(process.argv[2] ?? "{}") as {
  root: string;
  port: number;
  aliases?: Record<string, string>;
  shareFiles?: boolean;
  logFile: string;
};
const server = createTftpServer({
  root: cfg.root,
  aliases: cfg.aliases ?? {},
  addresses: ["127.0.0.1"],
  port: cfg.port,
  // The clients ask for 1468, what an Ethernet MTU of 1500 allows.
  maxBlksize: maxBlksizeForMtu(1500),
  maxWindowsize: 32,
  // Each generator client starts its next fetch the moment it sends its last ACK, before the
  // server has read that ACK, so 50 clients briefly hold more than 50 slots; both servers get 128.
  maxTransfers: 128,
  // Every generator client is 127.0.0.1: the per-address cap (4, against one host holding every
  // slot) would refuse all but 4 of the 50. dnsmasq and tftpd-hpa have no such cap.
  maxTransfersPerAddress: 128,
  shareFiles: cfg.shareFiles ?? true,
  log: pino({ level: "info" }, pino.destination({ dest: cfg.logFile, sync: false })),
});
await server.listen();
process.stdout.write("ready\n");
process.on("SIGTERM", () => {
  void server.close().then(() => process.exit(0));
});
