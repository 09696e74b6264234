# Shared by the step scripts of this recipe (sourced, not run). The runner gives every step
# the same environment (see ../README.md): BF_RECIPE_DIR, BF_WORK_DIR, BF_SUITE, ... and
# reads a step's stdout, where a line "PROGRESS <percent> <text>" reports progress within
# the step; every other line is log.
set -eu

need() {
  for v in "$@"; do
    eval "val=\${$v:-}"
    if [ -z "$val" ]; then
      echo "$0: $v is not set (run this step through the image recipe runner)" >&2
      exit 2
    fi
  done
}

progress() {
  pct=$1
  shift
  echo "PROGRESS $pct $*"
}

need BF_RECIPE_DIR BF_WORK_DIR
ROOT="$BF_WORK_DIR/root"

# Runs a command chrooted into the image's root with /proc, /sys, /dev and /run mounted.
# The mounts live in a private mount namespace (unshare -m) that dies with the command, so
# a killed build never leaves them behind on the build host.
in_root() {
  unshare --mount --propagation private -- sh -euc '
    root=$1
    shift
    mount -t proc proc "$root/proc"
    mount -t sysfs sysfs "$root/sys"
    mount --rbind /dev "$root/dev"
    mount -t tmpfs tmpfs "$root/run"
    exec chroot "$root" "$@"
  ' in_root "$ROOT" "$@"
}
