#!/bin/sh
# Step "grub": the two GRUB images, made with the image's own GRUB (grub-pc-bin and
# grub-efi-amd64-bin are in its packages, so the build host needs no GRUB and the image
# carries the modules its menu may insmod). No grub-install: it wants a block device with
# partitions, and this build writes a plain file (see the disk step). Output in
# $BF_WORK_DIR/grub/: boot.img and core.img for BIOS, BOOTX64.EFI for UEFI.
. "$(dirname "$0")/lib.sh"
need BF_PART_ROOT_LABEL
out="$BF_WORK_DIR/grub"
rm -rf "$out" "$ROOT/tmp/bootfleet-grub"
mkdir -p "$out" "$ROOT/tmp/bootfleet-grub"
sed "s/@ROOT_LABEL@/$BF_PART_ROOT_LABEL/g" "$BF_RECIPE_DIR/files/early.cfg" >"$ROOT/tmp/bootfleet-grub/early.cfg"

# What both need to reach grub.cfg and boot Linux: GPT, ext4, search by label, the
# serial terminal, the menu (normal) and the linux loader. Built in, so a missing or
# mismatched module directory on the root cannot stop the boot.
common="part_gpt ext2 search search_label normal linux echo test serial terminal"

progress 0 "GRUB for BIOS (i386-pc)"
# core.img goes into the BIOS boot partition (1 MiB): it must stay well under that.
in_root grub-mkimage -O i386-pc -o /tmp/bootfleet-grub/core.img -p /boot/grub \
  -c /tmp/bootfleet-grub/early.cfg biosdisk $common
cp "$ROOT/tmp/bootfleet-grub/core.img" "$ROOT/usr/lib/grub/i386-pc/boot.img" "$out/"

progress 50 "GRUB for UEFI (x86_64-efi)"
# efi_gop: the kernel gets the firmware's frame buffer for its screen console (without it
# GRUB says "no suitable video mode found" and Linux boots "in blind mode", serial only).
in_root grub-mkimage -O x86_64-efi -o /tmp/bootfleet-grub/BOOTX64.EFI -p /boot/grub \
  -c /tmp/bootfleet-grub/early.cfg $common efi_gop
cp "$ROOT/tmp/bootfleet-grub/BOOTX64.EFI" "$out/"
rm -rf "$ROOT/tmp/bootfleet-grub"

progress 100 "core.img $(stat -c %s "$out/core.img") B, BOOTX64.EFI $(stat -c %s "$out/BOOTX64.EFI") B"
