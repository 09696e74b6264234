#!/bin/sh
# Step "rootfs": Debian's root file system, from the build host's own Debian mirror, with
# the recipe's packages and without Recommends, into $BF_WORK_DIR/root.
. "$(dirname "$0")/lib.sh"
need BF_SUITE BF_VARIANT BF_PACKAGES BF_APT_SOURCES

rm -rf "$ROOT"
progress 0 "mmdebstrap $BF_SUITE ($BF_VARIANT) with: $BF_PACKAGES"

set -- --mode=root --variant="$BF_VARIANT" '--aptopt=APT::Install-Recommends "false"'
# The patterns are dpkg's, not the shell's: no globbing while they are split into words.
set -f
for p in ${BF_DPKG_EXCLUDES:-}; do
  set -- "$@" "--dpkgopt=path-exclude=$p"
done
set +f
# Licences stay, as Debian asks of anything that strips documentation.
[ -n "${BF_DPKG_EXCLUDES:-}" ] && set -- "$@" "--dpkgopt=path-include=/usr/share/doc/*/copyright"
# The initramfs is built once, by the initramfs step, with the settings below in place.
# Left alone, the kernel's postinst builds one, and open-iscsi's trigger rebuilds it:
# minutes each of a cold build (it copies and compresses hundreds of modules). So
# update-initramfs is diverted to /bin/true while packages install (the essential hook,
# before the kernel is unpacked) and restored at the end (the customize hook), as
# Debian's live-build does. Settings, before any package reads them:
#   - ISCSI_AUTO=true: open-iscsi's initramfs logs in from the iBFT (iscsistart -b);
#   - MODULES=netboot: every network driver but no disk controllers: the PC's disk is on
#     the network, and every boot reads the initramfs over iSCSI;
#   - COMPRESS=gzip: no zstd in the image;
#   - a hook that adds sd_mod (the iSCSI disk is a SCSI disk).
divert="dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.bootfleet"
set -- "$@" --essential-hook="mkdir -p \"\$1/etc/iscsi\" \"\$1/etc/initramfs-tools/conf.d\" \"\$1/etc/initramfs-tools/hooks\" &&
  echo ISCSI_AUTO=true >\"\$1/etc/iscsi/iscsi.initramfs\" &&
  printf 'MODULES=netboot\\nCOMPRESS=gzip\\n' >\"\$1/etc/initramfs-tools/conf.d/bootfleet.conf\" &&
  install -m 0755 '$BF_RECIPE_DIR/files/initramfs-hook' \"\$1/etc/initramfs-tools/hooks/bootfleet\" &&
  chroot \"\$1\" $divert --add /usr/sbin/update-initramfs &&
  ln -s /bin/true \"\$1/usr/sbin/update-initramfs\""
set -- "$@" --customize-hook="rm \"\$1/usr/sbin/update-initramfs\" &&
  chroot \"\$1\" $divert --remove /usr/sbin/update-initramfs"
set -- "$@" --include="$(echo "$BF_PACKAGES" | tr ' ' ',')" "$BF_SUITE" "$ROOT"
# One source a line, e.g. "deb http://deb.debian.org/debian bookworm main".
while IFS= read -r line; do
  [ -n "$line" ] && set -- "$@" "$line"
done <<SOURCES
$BF_APT_SOURCES
SOURCES

# mmdebstrap is verbose on stderr; the runner keeps it in the step's log.
mmdebstrap "$@"
progress 100 "root file system: $(du -smx "$ROOT" | cut -f1) MiB"
