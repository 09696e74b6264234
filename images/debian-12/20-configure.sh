#!/bin/sh
# Step "configure": turns mmdebstrap's root directory into a diskless iSCSI client.
. "$(dirname "$0")/lib.sh"
need BF_HOSTNAME BF_PART_ROOT_LABEL
files="$BF_RECIPE_DIR/files"
[ -d "$ROOT/etc" ] || { echo "no root file system in $ROOT: run the rootfs step first" >&2; exit 1; }

progress 0 "file systems, host name, consoles"
# The root is found by label: its UUID is the same in every clone anyway, and a label
# reads well in GRUB's menu. No swap: paging to a network disk is what loses a PC when
# the server is slow. The ESP is not mounted: nothing in the running system writes it.
printf 'LABEL=%s\t/\text4\tdefaults,errors=remount-ro\t0\t1\n' "$BF_PART_ROOT_LABEL" >"$ROOT/etc/fstab"

# The fallback name, for a boot without an iBFT; every sanboot gets the machine's name.
echo "$BF_HOSTNAME" >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
install -m 0755 "$files/bootfleet-ibft-hostname" "$ROOT/usr/local/sbin/bootfleet-ibft-hostname"
install -m 0644 "$files/bootfleet-ibft-hostname.service" "$ROOT/etc/systemd/system/"
echo iscsi_ibft >"$ROOT/etc/modules-load.d/bootfleet-ibft.conf"
in_root systemctl enable bootfleet-ibft-hostname.service

# Every PC of one image must get its own machine-id: an empty file makes systemd write a
# new one at the first boot of each overlay. systemd-firstboot would then prompt on the
# console for a locale and a root password, which nobody answers on a lab PC: masked.
: >"$ROOT/etc/machine-id"
in_root systemctl mask systemd-firstboot.service

# The serial console. The kernel's console= makes systemd start serial-getty@ttyS0.
# LAB IMAGE: root is logged in automatically on the serial port (agetty still prints
# "<hostname> login:" first, which the tests read). The serial port of a lab PC is
# physical access anyway; a recipe for production would drop this drop-in and set a root
# password or an SSH key instead.
#
# The getty must not wait for udev. The stock serial-getty@.service has
# BindsTo=/After=dev-ttyS0.device, a device unit that only appears when udev has
# processed the port; on a loaded server in a boot storm udev ran so late that the
# device job hit its 90 s time-out and the getty was never started (the PC booted, but
# without its login prompt). /dev/ttyS0 itself is in devtmpfs from the moment the kernel
# registers the port (8250 is built in, and it is the kernel's console), long before
# init runs, so agetty can open it without udev. A drop-in cannot remove a dependency,
# hence a copy of the template, for ttyS0 only, without the device lines (it takes
# precedence over the template; the autologin drop-in below still applies).
# DefaultDeviceTimeoutSec= (systemd 252 has it) raises every other device wait from
# 90 s to a bound a slow server keeps to; still a bound, so a missing disk still fails.
stock="$ROOT/usr/lib/systemd/system/serial-getty@.service"
grep -q '^BindsTo=dev-%i.device$' "$stock" || { echo "$stock: no BindsTo=dev-%i.device to drop (systemd changed?)" >&2; exit 1; }
sed -e '/^BindsTo=dev-%i\.device$/d' -e 's/^After=dev-%i\.device /After=/' "$stock" \
  >"$ROOT/etc/systemd/system/serial-getty@ttyS0.service"
if grep -q 'dev-%i' "$ROOT/etc/systemd/system/serial-getty@ttyS0.service"; then
  echo "serial-getty@ttyS0.service still depends on the udev device" >&2
  exit 1
fi
mkdir -p "$ROOT/etc/systemd/system.conf.d"
printf '[Manager]\nDefaultDeviceTimeoutSec=10min\n' >"$ROOT/etc/systemd/system.conf.d/bootfleet-device-timeout.conf"
mkdir -p "$ROOT/etc/systemd/system/serial-getty@ttyS0.service.d"
cat >"$ROOT/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" <<'UNIT'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 - $TERM
UNIT

progress 40 "iSCSI initiator"
# The initramfs settings (ISCSI_AUTO=true for open-iscsi, MODULES=netboot, gzip, sd_mod)
# were put in place by the rootfs step before the kernel was installed; the initramfs step
# checks the result. The initiator name of the image is a placeholder: the initramfs and
# iscsid take the one iPXE put in the iBFT, which bootfleet sets per machine.
echo "InitiatorName=iqn.2024-01.io.bootfleet:debian-12-golden" >"$ROOT/etc/iscsi/initiatorname.iscsi"

progress 60 "quiet boots"
# Timers that start apt, dpkg backups or scrubs at every boot of a fresh overlay (they are
# Persistent= and a reset-on-reboot PC has never run them) compete with the boot storm.
in_root systemctl mask apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
  e2scrub_all.timer e2scrub_reap.service fstrim.timer
# The journal in RAM: thousands of PCs writing their logs into their overlays is load on
# the server that nobody reads (a persistent PC can turn it back on).
mkdir -p "$ROOT/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' >"$ROOT/etc/systemd/journald.conf.d/bootfleet.conf"

progress 80 "GRUB menu"
mkdir -p "$ROOT/boot/grub"
sed "s/@ROOT_LABEL@/$BF_PART_ROOT_LABEL/g" "$files/grub.cfg" >"$ROOT/boot/grub/grub.cfg"
# Modules for `insmod` from the menu; the GRUB images carry what they need to get here.
for platform in i386-pc x86_64-efi; do
  rm -rf "$ROOT/boot/grub/$platform"
  cp -r "$ROOT/usr/lib/grub/$platform" "$ROOT/boot/grub/$platform"
done
[ -e "$ROOT/vmlinuz" ] || { echo "no /vmlinuz symlink in the image: grub.cfg boots it" >&2; exit 1; }
progress 100 "configured"
