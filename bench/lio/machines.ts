// The bench's machines, named the same on the host (which writes targetcli's scripts) and in
// the guest (where bootfleet's driver applies them): one target per machine with one
// system disk, a fileio LUN 0 on a sparse file, one ACL with CHAP.

export const PREFIX = "iqn.2024-01.io.bootfleet";
/** Loopback: the portal has to be an address the guest has; no initiator logs in. */
export const PORTAL = { address: "127.0.0.1", port: 3260 };
const GiB = 1024 ** 3;

export interface MachineNames {
  prefix: string;
  target: string;
  initiator: string;
  chapUser: string;
  /** The backing file's name in the backing folder. */
  file: string;
  sizeBytes: number;
  /** A fixed UUID-shaped unit serial per machine. */
  wwn: string;
  /** rtslib's name of the fileio storage object, as bootfleet names it. */
  storageObject: string;
}

export function machineNames(i: number): MachineNames {
  const n = String(i).padStart(3, "0");
  return {
    prefix: PREFIX,
    target: `${PREFIX}:pc-${n}`,
    initiator: `${PREFIX}:client-${n}`,
    chapUser: `pc-${n}`,
    file: `pc-${n}.img`,
    sizeBytes: GiB,
    wwn: `b00f1ee7-0000-4000-8000-000000000${n}`,
    storageObject: `bf-pc-${n}-lun0`,
  };
}
