#!/bin/sh
# Turns the root directory mmdebstrap made ($1) into a bootable test guest named $2.
# image.ts runs it after mmdebstrap has finished (mmdebstrap's own cleanup would empty
# /etc/machine-id again). Its text is part of the recipe hash: any change builds a new image.
set -eu
root=$1
name=$2

echo "$name" >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
  "$name" >"$root/etc/hosts"
# No fsck pass: the kernel mounts / read-write (root=/dev/vda rw) before systemd runs.
printf '/dev/vda\t/\text4\trw,errors=remount-ro\t0\t0\n' >"$root/etc/fstab"
# The 9p share of the host is mounted here by the harness once the guest is up.
mkdir -p "$root/host"
# mmdebstrap copied the build host's resolv.conf; in the guest, QEMU's user-mode
# network answers DNS at 10.0.2.3.
rm -f "$root/etc/resolv.conf"
echo 'nameserver 10.0.2.3' >"$root/etc/resolv.conf"

# An empty machine-id makes every boot a "first boot", and systemd-firstboot then
# prompts on the console for a locale and a root password, which nobody answers.
od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$root/etc/machine-id"
echo >>"$root/etc/machine-id"

mkdir -p "$root/etc/systemd/network"
cat >"$root/etc/systemd/network/20-virtio.network" <<'EOF'
# The one virtio NIC on QEMU's user-mode network: DHCP gives 10.0.2.15.
[Match]
Type=ether

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF

# rtslib-fb-targetctl restores /etc/rtslib-fb-target/saveconfig.json at boot: the LIO
# driver's restart behaviour depends on it, so the image must have it enabled.
chroot "$root" systemctl enable systemd-networkd.service rtslib-fb-targetctl.service
# Timers that would start apt, dpkg backups or scrubs in the middle of a test (they are
# Persistent=, and a fresh image has never run them, so they would fire at every boot).
chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
  e2scrub_all.timer fstrim.timer
# e2scrub_reap looks for LVM snapshots e2scrub left behind: none here, and it costs
# seconds of emulated CPU at every boot.
chroot "$root" systemctl mask e2scrub_reap.service
# qemu-guest-agent.service has no [Install]: udev starts it when the virtio-serial port
# org.qemu.guest_agent.0 appears. Fail the build if that rule is missing.
grep -rqs 'org.qemu.guest_agent.0' "$root/lib/udev/rules.d" "$root/usr/lib/udev/rules.d"

# The kernel has virtio_pci, virtio_blk and ext4 as modules: the initrd must carry them
# to mount /dev/vda. Debian's default initrd (MODULES=most, ~40 MB) takes seconds to
# unpack under TCG at every boot; a listed one is a third of that. (9p, 9pnet_virtio and
# LIO load later from the root file system.) No zstd in the guest, hence gzip.
printf 'MODULES=list\nCOMPRESS=gzip\n' >"$root/etc/initramfs-tools/conf.d/bf-guest.conf"
printf 'virtio_pci\nvirtio_blk\next4\n' >>"$root/etc/initramfs-tools/modules"
for kver in $(ls "$root/lib/modules"); do
  chroot "$root" mkinitramfs -o "/boot/initrd.img-$kver" "$kver"
  list=$(chroot "$root" lsinitramfs "/boot/initrd.img-$kver")
  for m in virtio_pci virtio_blk ext4; do
    echo "$list" | grep -q "/$m.ko" || {
      echo "initrd.img-$kver lacks $m.ko" >&2
      exit 1
    }
  done
  for m in 9p 9pnet_virtio target_core_mod iscsi_target_mod; do
    find "$root/lib/modules/$kver" -name "$m.ko*" | grep -q . || {
      echo "kernel $kver lacks $m.ko" >&2
      exit 1
    }
  done
done
