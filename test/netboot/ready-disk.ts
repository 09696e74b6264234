import type { SanbootPreparer } from "../../src/netboot/boot-script.js";

/**
 * Stands in for the iSCSI service: every target's disk is ready at LUN 1 of `server`,
 * with the target's own CHAP. `onPrepare` sees each target prepared.
 */
export function readyDisk(server: string, onPrepare?: (targetId: number) => void): SanbootPreparer {
  return async (machine, target) => {
    onPrepare?.(target.id);
    return {
      ok: true,
      data: {
        name: machine.name,
        initiatorIqn: target.initiator_iqn,
        chap: { username: target.chap_username, password: target.chap_password },
        system: { server, lun: 1, targetIqn: target.iqn },
      },
    };
  };
}
