#!/bin/sh
# Step "disk": assembles the raw disk image from the recipe's partition layout, without a
# block device: this build host's loop devices do no partition scanning (no /dev/loopNp1),
# so every file system is written into the plain file at its partition's offset.
#   - GPT by sfdisk on the file;
#   - the ESP made as a small FAT32 file (mkfs.vfat, mtools) and copied into place;
#   - the root made by mkfs.ext4 -d straight from the root directory, at its offset
#     (-E offset=), so nothing is mounted and the file stays sparse;
#   - GRUB for BIOS installed by hand, exactly as grub-bios-setup embeds it on a GPT disk
#     (grub/util/setup.c): core.img in the BIOS boot partition, boot.img in the MBR with
#     the sector of core.img patched in. grub-bios-setup itself probes the OS device
#     under the file and its partitions, which is what this host cannot show it.
. "$(dirname "$0")/lib.sh"
need BF_DISK_SIZE_MIB BF_PARTITIONS BF_PART_BIOS_START BF_PART_ESP_START BF_PART_ROOT_START
grub="$BF_WORK_DIR/grub"
disk="$BF_WORK_DIR/disk.raw"
[ -s "$grub/core.img" ] || { echo "no $grub/core.img: run the grub step first" >&2; exit 1; }

part() { eval "echo \${BF_PART_$(echo "$1" | tr a-z A-Z)_$2:-}"; }

# Writes the unsigned integer $2 as $3 little-endian bytes at byte $1 of file $4.
put_le() {
  off=$1 value=$2 n=$3 file=$4 bytes=""
  i=0
  while [ $i -lt "$n" ]; do
    bytes="$bytes$(printf '\\%03o' $((value & 255)))"
    value=$((value >> 8))
    i=$((i + 1))
  done
  printf "$bytes" | dd of="$file" bs=1 seek="$off" conv=notrunc status=none
}

progress 0 "partition table"
rm -f "$disk"
truncate -s "${BF_DISK_SIZE_MIB}M" "$disk"
{
  echo "label: gpt"
  for p in $BF_PARTITIONS; do
    echo "start=$(part "$p" START), size=$(part "$p" SECTORS), type=$(part "$p" TYPE), name=\"$(part "$p" NAME)\""
  done
} | sfdisk --quiet --no-reread --no-tell-kernel "$disk"
sfdisk --dump "$disk"

progress 10 "ESP (FAT32) with GRUB for UEFI at EFI/BOOT/BOOTX64.EFI"
# The removable-media path: firmware (and iPXE's sanboot on UEFI) boots it without any
# boot entry in NVRAM, which a diskless PC's image cannot carry.
esp="$BF_WORK_DIR/esp.img"
rm -f "$esp"
mkfs.vfat -F 32 -n "$BF_PART_ESP_LABEL" -C "$esp" $((BF_PART_ESP_SECTORS / 2)) >/dev/null
mmd -i "$esp" ::/EFI ::/EFI/BOOT
mcopy -i "$esp" "$grub/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
dd if="$esp" of="$disk" bs=512 seek="$BF_PART_ESP_START" conv=notrunc,sparse status=none
rm -f "$esp"

progress 20 "root file system (ext4, label $BF_PART_ROOT_LABEL) from $ROOT"
# -E offset: mke2fs writes into the file at the partition's byte offset, the size given in
# KiB. No resize inode nor reserved blocks beyond the default: a clone is never resized.
mkfs.ext4 -q -F -L "$BF_PART_ROOT_LABEL" -d "$ROOT" \
  -E offset=$((BF_PART_ROOT_START * 512)) "$disk" "$((BF_PART_ROOT_SECTORS / 2))k"

progress 90 "GRUB for BIOS: core.img in the BIOS boot partition, boot.img in the MBR"
core_sectors=$((($(stat -c %s "$grub/core.img") + 511) / 512))
[ "$core_sectors" -le "$BF_PART_BIOS_SECTORS" ] || {
  echo "core.img ($core_sectors sectors) does not fit the BIOS boot partition" >&2
  exit 1
}
dd if="$grub/core.img" of="$disk" bs=512 seek="$BF_PART_BIOS_START" conv=notrunc status=none
# core.img's first sector (diskboot.img) ends with a block list of where the rest of
# core.img is: 8-byte start LBA, 2-byte length, 2-byte segment at 0x1f4. grub-mkimage
# set the length; the start is the sector after diskboot.img.
put_le $((BF_PART_BIOS_START * 512 + 0x1f4)) $((BF_PART_BIOS_START + 1)) 8 "$disk"
# boot.img: its first 440 bytes (the GPT's protective MBR, with the disk signature and
# the partition entry, stays), the LBA of core.img at 0x5c, and at 0x66 the jump of the
# "buggy BIOS" drive check replaced by two NOPs, as grub-bios-setup does for a hard disk.
dd if="$grub/boot.img" of="$disk" bs=440 count=1 conv=notrunc status=none
put_le $((0x5c)) "$BF_PART_BIOS_START" 8 "$disk"
printf '\220\220' | dd of="$disk" bs=1 seek=$((0x66)) conv=notrunc status=none

progress 100 "disk.raw: $(du -m --apparent-size "$disk" | cut -f1) MiB, $(du -m "$disk" | cut -f1) MiB allocated"
