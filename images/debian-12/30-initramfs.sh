#!/bin/sh
# Step "initramfs": makes sure every initramfs can find an iSCSI root from the iBFT:
# open-iscsi's hook with iscsistart and ISCSI_AUTO=true, the iSCSI, iBFT, SCSI disk and
# ext4 modules, and network drivers (e1000 and virtio-net of the tests among them).
# The kernel's install normally built it right already (the rootfs step put the settings in
# place first); if one lacks anything (the settings came too late, a package order
# changed), it is rebuilt here and checked again.
. "$(dirname "$0")/lib.sh"

# Prints what an initramfs lacks, nothing when it is complete.
lacks() {
  list=$(in_root lsinitramfs "/boot/$1")
  for f in /sbin/iscsistart iscsi.initramfs iscsi_tcp.ko iscsi_ibft.ko sd_mod.ko ext4.ko e1000.ko e1000e.ko virtio_net.ko; do
    echo "$list" | grep -q -- "$f" || echo "$f"
  done
  # The setting itself, not just the file.
  in_root sh -c "unmkinitramfs /boot/$1 /tmp/bootfleet-initrd &&
    grep -rqs ISCSI_AUTO=true /tmp/bootfleet-initrd; rc=\$?; rm -rf /tmp/bootfleet-initrd; exit \$rc" ||
    echo "ISCSI_AUTO=true"
}

progress 0 "checking the initramfs"
for initrd in "$ROOT"/boot/initrd.img-*; do
  name=${initrd##*/}
  missing=$(lacks "$name")
  if [ -n "$missing" ]; then
    progress 20 "$name lacks $(echo $missing): rebuilding it"
    in_root update-initramfs -u -k "${name#initrd.img-}"
    missing=$(lacks "$name")
    [ -z "$missing" ] || {
      echo "$name still lacks $(echo $missing): it could not find an iSCSI root" >&2
      exit 1
    }
  fi
  progress 90 "$name: $(du -k "$initrd" | cut -f1) KiB, finds an iSCSI root from the iBFT"
done
progress 100 "initramfs ready"
