#!/bin/sh
# Step "initramfs": builds the initramfs of every kernel in the image (the rootfs step kept
# package installs from building it, with its settings already in place) and checks it can
# find an iSCSI root from the iBFT: open-iscsi's hook with iscsistart and ISCSI_AUTO=true,
# the iSCSI, iBFT, SCSI disk and ext4 modules, and network drivers (e1000 and virtio-net
# of the tests among them).
. "$(dirname "$0")/lib.sh"

# Prints what an initramfs lacks, nothing when it is complete.
lacks() {
  list=$(in_root lsinitramfs "/boot/$1")
  for f in /sbin/iscsistart iscsi.initramfs iscsi_tcp.ko iscsi_ibft.ko sd_mod.ko ext4.ko \
    e1000.ko e1000e.ko virtio_net.ko; do
    echo "$list" | grep -q -- "$f" || echo "$f"
  done
  # The setting itself, not just the file.
  in_root sh -c "unmkinitramfs /boot/$1 /tmp/bootfleet-initrd &&
    grep -rqs ISCSI_AUTO=true /tmp/bootfleet-initrd; rc=\$?; rm -rf /tmp/bootfleet-initrd; exit \$rc" ||
    echo "ISCSI_AUTO=true"
}

[ -x "$ROOT/usr/sbin/update-initramfs" ] && [ ! -L "$ROOT/usr/sbin/update-initramfs" ] || {
  echo "update-initramfs is still diverted in the image: the rootfs step did not finish" >&2
  exit 1
}
for dir in "$ROOT"/lib/modules/*; do
  version=${dir##*/}
  progress 0 "update-initramfs for $version"
  in_root update-initramfs -c -k "$version"
  # /initrd.img, which grub.cfg boots, follows the newest kernel, as Debian keeps it.
  in_root linux-update-symlinks install "$version" "/boot/vmlinuz-$version"
  progress 80 "checking initrd.img-$version"
  missing=$(lacks "initrd.img-$version")
  [ -z "$missing" ] || {
    echo "initrd.img-$version lacks $(echo $missing): it could not find an iSCSI root" >&2
    exit 1
  }
  progress 90 "initrd.img-$version: $(du -k "$ROOT/boot/initrd.img-$version" | cut -f1) KiB"
done
[ -e "$ROOT/initrd.img" ] || { echo "no /initrd.img symlink in the image: grub.cfg boots it" >&2; exit 1; }
progress 100 "initramfs ready"
