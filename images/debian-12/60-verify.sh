#!/bin/sh
# Step "verify": reads the finished disk back before it can be registered: the partition
# table, the root file system (e2fsck, read-only, through a loop device at the partition's
# offset: no partition scanning needed), GRUB in the MBR and in the ESP.
. "$(dirname "$0")/lib.sh"
disk="$BF_WORK_DIR/disk.raw"

progress 0 "partition table"
table=$(sfdisk --dump "$disk")
for p in $BF_PARTITIONS; do
  start=$(eval "echo \$BF_PART_$(echo "$p" | tr a-z A-Z)_START")
  echo "$table" | grep -q "start= *$start," || { echo "no partition at sector $start" >&2; exit 1; }
done

progress 20 "root file system"
loop=$(losetup --find --show --read-only --offset $((BF_PART_ROOT_START * 512)) \
  --sizelimit $((BF_PART_ROOT_SECTORS * 512)) "$disk")
trap 'losetup -d "$loop"' EXIT
e2fsck -fn "$loop"
[ "$(blkid -o value -s LABEL "$loop")" = "$BF_PART_ROOT_LABEL" ] || {
  echo "the root file system is not labelled $BF_PART_ROOT_LABEL" >&2
  exit 1
}
losetup -d "$loop"
trap - EXIT

progress 80 "boot loaders"
[ "$(od -An -tx1 -j510 -N2 "$disk" | tr -d ' ')" = 55aa ] || { echo "no boot signature in the MBR" >&2; exit 1; }
cmp -s -n 440 "$disk" "$BF_WORK_DIR/grub/boot.img" && { echo "boot.img was not patched" >&2; exit 1; }
mdir -i "$disk@@$((BF_PART_ESP_START * 512))" ::/EFI/BOOT/BOOTX64.EFI
progress 100 "verified"
