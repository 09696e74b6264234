#!/usr/bin/env bash
# Builds dist/bootfleet_<version>_<arch>.deb with dpkg-deb alone (no debhelper, nothing
# downloaded): the compiled code, the production node_modules and the Node.js runtime
# this script runs on, under /usr/lib/bootfleet. Runs as a normal user
# (dpkg-deb --root-owner-group). Quiet on success: one line naming the file and its size.
#
#   debian/build-deb.sh [--skip-build] [--out DIR]
#
#   --skip-build  use dist/ as it is (the tests: rebuilding dist/ under other running
#                 tests would hand them half-written files)
#   --out DIR     write the .deb there instead of dist/
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

skip_build=no
out_dir="$REPO/dist"
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-build) skip_build=yes ;;
    --out)
      out_dir=${2:?--out needs a directory}
      shift
      ;;
    *)
      echo "usage: debian/build-deb.sh [--skip-build] [--out DIR]" >&2
      exit 2
      ;;
  esac
  shift
done

die() {
  echo "build-deb: $*" >&2
  exit 1
}
for tool in dpkg-deb strip objdump gzip md5sum; do
  command -v "$tool" >/dev/null || die "needs $tool (Debian packages dpkg, binutils, gzip, coreutils)"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/bootfleet-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
log="$work/log"
# Runs a noisy step with its output kept aside, shown only when it fails.
quiet() {
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    die "failed: $*"
  fi
}

if [ "$skip_build" = no ]; then
  quiet npm run build
fi

version=$(node -p 'require("./package.json").version')
[[ "$version" =~ ^[0-9][0-9A-Za-z.+~]*$ ]] || die "package.json version \"$version\" is not a Debian version"
arch=$(dpkg --print-architecture)
node_bin=$(node -p process.execPath)
node_version=$(node -p process.versions.node)
[ "${node_version%%.*}" -ge 20 ] || die "the bundled runtime must be Node.js 20 or newer; this is $node_version"

umask 022
root="$work/root"
lib="$root/usr/lib/bootfleet"
doc="$root/usr/share/doc/bootfleet"
mkdir -p "$lib" "$doc" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/bootfleet" \
  "$root/usr/share/lintian/overrides" "$root/usr/share/man/man8" "$root/DEBIAN"

# The compiled code: only outputs whose source still exists (tsc leaves the output of a
# deleted source behind), without source maps (they point into src/, not shipped).
(cd dist && find . -name '*.js' -type f) | sort | while read -r f; do
  src="src/${f#./}"
  [ -f "${src%.js}.ts" ] || continue
  install -D -m 0644 "dist/$f" "$lib/dist/$f"
done
[ -f "$lib/dist/daemon/main.js" ] || die "dist/daemon/main.js missing: run npm run build"
# The daemon as bin/bootfleetd.js runs it: one bundled file (scripts/build-daemon.mjs).
[ -f dist/bootfleetd.mjs ] || die "dist/bootfleetd.mjs missing: run npm run build"
install -m 0644 dist/bootfleetd.mjs "$lib/dist/bootfleetd.mjs"
# The web dashboard (scripts/build-web.mjs): index.html and its content-hashed assets,
# which the loop above skips (they have no .ts source of their own).
[ -f dist/web/index.html ] || die "dist/web/index.html missing: run npm run build"
(cd dist/web && find . -type f ! -name '*.map') | sort | while read -r f; do
  install -D -m 0644 "dist/web/$f" "$lib/dist/web/${f#./}"
done
install -m 0644 -t "$lib/bin" -D bin/bootfleetd.js bin/bootfleet.js
install -m 0644 -t "$lib/ipxe" -D ipxe/*.ipxe
# The image recipes, as data: the installed daemon's default [images] recipes_dir
# (src/config/config.ts, packageRecipesDir). Scripts keep their executable bit, which is
# part of a recipe's content hash: the same recipe has the same build cache key installed
# and in the repository.
share="$root/usr/share/bootfleet/images"
(cd images && find . -type f) | sort | while read -r f; do
  mode=0644
  [ -x "images/$f" ] && mode=0755
  install -D -m "$mode" "images/$f" "$share/${f#./}"
done
[ -f "$share/debian-12/recipe.json" ] || die "images/debian-12/recipe.json missing"
# "type": "module" makes the .js files ESM; the version is read from here too.
install -m 0644 package.json "$lib/package.json"

# Production node_modules: exactly the packages npm counts as production (npm ls
# --omit=dev: offline, the set npm prune --omit=dev would keep), each copied without
# its nested node_modules, which are listed on their own when they are production too.
# Cheaper than copying all ~300 MB and pruning. The native modules then lose their
# build intermediates and C sources: only build/Release/*.node is loaded.
npm ls --omit=dev --all --parseable >"$work/production" 2>"$log" || {
  cat "$log" >&2
  die "npm ls found problems in node_modules (npm ci repairs them)"
}
grep "^$REPO/node_modules/" "$work/production" | while read -r dir; do
  rel=${dir#"$REPO"/}
  find "$rel" -path "$rel/node_modules" -prune -o -print
done >"$work/files"
[ -s "$work/files" ] || die "npm ls listed no production package"
tar -C "$REPO" --no-recursion -cf - -T "$work/files" | tar -C "$lib" -xf -
find "$lib/node_modules" -name binding.gyp -type f | while read -r gyp; do
  pkg=$(dirname "$gyp")
  keep="$work/keep"
  mkdir -p "$keep"
  find "$pkg/build/Release" -maxdepth 1 -name '*.node' ! -name 'test_*' -exec mv -t "$keep" {} +
  compgen -G "$keep/*.node" >/dev/null || die "${pkg#"$lib"/}: no build/Release/*.node (npm rebuild?)"
  rm -rf "$pkg/build"
  mkdir -p "$pkg/build/Release"
  mv -t "$pkg/build/Release" "$keep"/*.node
  # C and C++ sources (better-sqlite3 carries all of SQLite's) and gyp files, by name,
  # so that JavaScript a package keeps beside them stays.
  find "$pkg" -type f \( -name '*.c' -o -name '*.cc' -o -name '*.cpp' -o -name '*.h' \
    -o -name '*.hpp' -o -name '*.gyp' -o -name '*.gypi' \) -delete
done
# What npm publishes but nothing loads: each package's tests, examples, benchmarks and
# HTML docs pages, a package's own Makefile (bintrees ships the one it builds its
# browser bundle with), and dotfiles (lint, CI and editor settings, .npmignore).
grep "^$REPO/node_modules/" "$work/production" | while read -r dir; do
  pkg="$lib/${dir#"$REPO"/}"
  rm -rf "$pkg"/{test,tests,__tests__,example,examples,benchmark,benchmarks} "$pkg"/*.html \
    "$pkg"/Makefile
done
find "$lib/node_modules" -name '.*' -prune -exec rm -rf {} +
# swagger-ui-dist (Swagger UI for /api/docs) carries a bundle for every way of loading it,
# each with its source map (~12 MB); the daemon serves two of its files.
swagger="$lib/node_modules/swagger-ui-dist"
if [ -d "$swagger" ]; then
  find "$swagger" -type f ! -name package.json ! -name LICENSE ! -name NOTICE ! -name index.js \
    ! -name absolute-path.js ! -name swagger-ui-bundle.js ! -name swagger-ui.css -delete
  [ -f "$swagger/swagger-ui-bundle.js" ] || die "swagger-ui-dist has no swagger-ui-bundle.js"
fi
find "$lib/node_modules" -depth -type d -empty -delete

# The runtime: Node.js links only libc, libstdc++ and libgcc_s, so the package needs no
# nodejs package (Debian 12's is 18, which the dependencies do not support).
install -D -m 0755 "$node_bin" "$lib/node/bin/node"
for license in "$(dirname "$node_bin")/../share/doc/nodejs/LICENSE" "$(dirname "$node_bin")/../LICENSE"; do
  if [ -f "$license" ]; then
    install -m 0644 "$license" "$lib/node/LICENSE"
    break
  fi
done
[ -f "$lib/node/LICENSE" ] || die "cannot find the LICENSE of the Node.js at $node_bin"

# Stripped as dh_strip would (the dynamic symbols native modules link against stay).
strip --remove-section=.comment --remove-section=.note "$lib/node/bin/node"
find "$lib/node_modules" -name '*.node' -type f \
  -exec strip --remove-section=.comment --remove-section=.note --strip-unneeded {} +

for name in bootfleetd bootfleet; do
  cat >"$root/usr/bin/$name" <<EOF
#!/bin/sh
# Runs $name on the Node.js runtime bundled with the package.
exec /usr/lib/bootfleet/node/bin/node /usr/lib/bootfleet/bin/$name.js "\$@"
EOF
  chmod 0755 "$root/usr/bin/$name"
done

install -m 0644 systemd/bootfleetd.service "$root/lib/systemd/system/bootfleetd.service"
install -D -m 0644 debian/modules-load.conf "$root/usr/lib/modules-load.d/bootfleet.conf"
node --input-type=module -e '
  const { renderConfigTemplate } = await import(process.argv[1]);
  process.stdout.write(renderConfigTemplate());
' "$REPO/dist/daemon/config-template.js" >"$root/etc/bootfleet/bootfleetd.toml"
chmod 0644 "$root/etc/bootfleet/bootfleetd.toml"

install -m 0644 README.md "$doc/README.md"
install -m 0644 debian/copyright "$doc/copyright"
install -m 0644 debian/lintian-overrides "$root/usr/share/lintian/overrides/bootfleet"
for page in debian/*.8; do
  gzip -9n <"$page" >"$root/usr/share/man/man8/$(basename "$page").gz"
done

# The changelog names the commit and is dated by it, so two builds of one commit match.
# changelog.gz, not changelog.Debian.gz: a version without a Debian revision is a
# native package, whose only changelog is the Debian one (policy 12.7).
maintainer="bootfleet maintainers <maintainers@bootfleet.invalid>"
commit=$(git rev-parse --short HEAD 2>/dev/null || true)
date=$(git log -1 --format=%cD 2>/dev/null || true)
[ -n "$date" ] || date=$(date -R)
# dpkg-deb clamps the files' times to SOURCE_DATE_EPOCH: with the commit's time, as for
# the changelog, two builds of one commit give the same bytes.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
  export SOURCE_DATE_EPOCH
fi
{
  echo "bootfleet ($version) unstable; urgency=medium"
  echo
  echo "  * bootfleet $version${commit:+, built from commit $commit}."
  echo
  echo " -- $maintainer  $date"
} | gzip -9n >"$doc/changelog.gz"

# Ownership comes from --root-owner-group; modes are made uniform here (npm tarballs
# carry group-writable and stray executable bits).
find "$root" -type d -exec chmod 0755 {} +
find "$root" -type f ! -path "$root/usr/bin/*" ! -path "$lib/node/bin/node" ! -path "$share/*" \
  -exec chmod 0644 {} +

install -m 0755 debian/postinst debian/prerm debian/postrm "$root/DEBIAN/"
echo /etc/bootfleet/bootfleetd.toml >"$root/DEBIAN/conffiles"
chmod 0644 "$root/DEBIAN/conffiles"
(cd "$root" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' |
  LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"

# The newest glibc symbol version any bundled ELF file needs sets the libc6 dependency.
glibc=$(find "$lib" -type f \( -name '*.node' -o -path "$lib/node/bin/node" \) \
  -exec objdump -T {} + | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
installed_size=$(du -sk --apparent-size --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@GLIBC@/$glibc/" \
  -e "s/@INSTALLED_SIZE@/$installed_size/" -e "s/@MAINTAINER@/$maintainer/" \
  debian/control.in >"$root/DEBIAN/control"
chmod 0644 "$root/DEBIAN/control"

mkdir -p "$out_dir"
deb="$out_dir/bootfleet_${version}_${arch}.deb"
# Written beside its final name and renamed, so a reader never sees half a package.
trap 'rm -rf "$work" "$deb.partial"' EXIT
# xz -z1: within 15% of -z6 in size, three to five times faster on two cores.
quiet dpkg-deb --root-owner-group -Zxz -z1 --build "$root" "$deb.partial"
mv -f "$deb.partial" "$deb"
echo "${deb#"$REPO"/}: $(stat -c %s "$deb" | awk '{ printf "%.1f MB", $1 / 1e6 }')"
