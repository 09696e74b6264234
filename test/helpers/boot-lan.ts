import { truncateSync, writeFileSync } from "node:fs";
import { type DisklessLab, startDisklessLab } from "./diskless-lab.js";

type Teardown = { teardown(fn: () => void | Promise<void>): void };

// test/fixtures/boot/boot-sector.asm assembled (as in sanboot.test.ts): reads LBA 3 of
// its boot disk, prints DISKLESS-BOOT-OK, writes LBA 3, prints DISKLESS-WRITE-OK.
const BOOT_CODE =
  "fa31c08ed88ec08ed0bc007cfb8816687cb80102b9040030f68a16687cbb0080cd13722dbe697c803e0080577503be827ce82500b80103b9040030f68a16687cbbc47ccd13720abe9a7ce80c00faf4ebfcbeae7ce80200ebf4ac08c07409b40ebb0700cd10ebf2c3004449534b4c4553532d424f4f542d4f4b2046524553480d0a004449534b4c4553532d424f4f542d4f4b205345454e0d0a004449534b4c4553532d57524954452d4f4b0d0a004449534b4c4553532d4449534b2d4552524f520d0a005752495454454e2d42592d424f4f54";

/** The serial markers of a boot of the test boot sector that read and wrote its disk. */
export const BOOT_SECTOR_OK = /DISKLESS-BOOT-OK[\s\S]*DISKLESS-WRITE-OK/;

export interface BootLan extends DisklessLab {
  machineId: number;
  mac: string;
}

/**
 * A LAN in a namespace ready for one BIOS PC to sanboot the test boot sector (512 bytes,
 * so the boot is quick): the diskless lab with that sector as its golden image and one
 * machine, whose NIC's own iPXE chainloads bootfleet's over TFTP (the boot passes the
 * ipxe phase). Everything is removed in teardown.
 */
export async function startBootLan(
  t: Teardown,
  opts: { name: string; subnet: string; mac: string; machineName: string },
): Promise<BootLan> {
  const lab = await startDisklessLab(t, {
    name: opts.name,
    net: opts.subnet,
    fsBytes: 2 * 1024 ** 3,
    writeGolden: writeBootSector,
    machines: { pc: { name: opts.machineName, mac: opts.mac, policy: "persistent" } },
    env: { BOOTFLEET_DHCP_CHAINLOAD_NIC_IPXE: "true" },
  });
  return { ...lab, machineId: lab.ids.pc!.machine, mac: opts.mac };
}

/** A 64 MiB disk whose first sector is the test boot sector. */
export function writeBootSector(path: string): void {
  const sector = Buffer.alloc(512);
  Buffer.from(BOOT_CODE, "hex").copy(sector);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  writeFileSync(path, sector);
  truncateSync(path, 64 * 1024 * 1024);
}
