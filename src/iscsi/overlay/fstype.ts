import { statfs } from "node:fs/promises";

// Magic numbers from linux/magic.h for the file systems an appliance is likely to meet.
const MAGIC_NAMES = new Map<number, string>([
  [0x58465342, "xfs"],
  [0x9123683e, "btrfs"],
  [0xef53, "ext2/ext3/ext4"],
  [0x01021994, "tmpfs"],
  [0x794c7630, "overlayfs"],
  [0x6969, "nfs"],
  [0xff534d42, "cifs"],
  [0xfe534d42, "smb2"],
  [0x2fc12fc1, "zfs"],
  [0x65735546, "fuse"],
  [0xf2f52010, "f2fs"],
  [0x5346544e, "ntfs"],
  [0x4d44, "vfat"],
  [0x3153464a, "jfs"],
  [0x52654973, "reiserfs"],
  [0xca451a4e, "bcachefs"],
  [0x858458f6, "ramfs"],
  [0x9fa0, "proc"],
]);

/** A readable name of the file system that holds `path`, for error messages. */
export async function fileSystemType(path: string): Promise<string> {
  try {
    const { type } = await statfs(path);
    // statfs hands f_type back as a signed long on some builds.
    const magic = type >>> 0;
    return MAGIC_NAMES.get(magic) ?? `unknown (magic 0x${magic.toString(16)})`;
  } catch {
    return "unknown";
  }
}
