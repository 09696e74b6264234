import { join } from "node:path";
import type { ConfigFs } from "./lio-configfs.js";
import type { TargetIo } from "./types.js";

/**
 * I/O a LIO target served, from configfs: each LUN's
 * `statistics/scsi_tgt_port/{in_cmds,read_mbytes,write_mbytes}`. These count since the
 * LUN was created, across sessions (so `cumulative`): a caller compares two readings.
 * Commands, not megabytes, tell a first read: a boot sector is far below a megabyte.
 */
export async function readLioIo(fs: ConfigFs, root: string, iqn: string): Promise<TargetIo> {
  const lunDir = join(root, "iscsi", iqn, "tpgt_1", "lun");
  const luns = await fs.readdir(lunDir).catch(() => [] as string[]);
  const io: TargetIo = { readBytes: 0, writeBytes: 0, commands: 0, cumulative: true };
  const num = async (p: string) => {
    const v = Number((await fs.read(p).catch(() => "0")).trim());
    return Number.isFinite(v) ? v : 0;
  };
  for (const lun of luns.filter((n) => /^lun_\d+$/.test(n))) {
    const stats = join(lunDir, lun, "statistics", "scsi_tgt_port");
    io.commands += await num(join(stats, "in_cmds"));
    io.readBytes += (await num(join(stats, "read_mbytes"))) * 2 ** 20;
    io.writeBytes += (await num(join(stats, "write_mbytes"))) * 2 ** 20;
  }
  return io;
}
