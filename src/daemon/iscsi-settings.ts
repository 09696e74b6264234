import type { Config } from "../config/config.js";
import type { IscsiSettings } from "../iscsi/settings.js";

/** The configuration, as the iSCSI room takes it. */
export function iscsiSettings(config: Config, opts: { isRoot: boolean }): IscsiSettings {
  const c = config.iscsi;
  return {
    targetDriver: c.target_driver,
    overlayDriver: c.overlay_driver,
    overlaysDir: c.overlays_dir,
    imagesDir: config.images_dir,
    lvmVolumeGroup: c.lvm_volume_group,
    portal: { address: c.portal_address || "0.0.0.0", port: c.portal_port },
    iqnPrefix: c.iqn_prefix,
    tgt: { controlPort: c.tgt_control_port, confDir: c.tgt_conf_dir },
    lio: { saveconfigPath: c.lio_saveconfig },
    sessionPollMs: c.session_poll_ms,
    warmMaxBytes: c.warm_max_mib * 1024 * 1024,
    bootSetRecordSeconds: c.boot_set_record_seconds,
    // modprobe needs root; without it, "auto" simply takes tgt when configfs is absent.
    mayLoadModules: opts.isRoot,
    reservePercent: config.storage.reserve_percent,
  };
}
