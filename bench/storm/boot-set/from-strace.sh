#!/bin/sh
# Turns an strace log of tgtd (strace -f -y -s 0 -e trace=pread64,preadv -o FILE -p PID,
# as test/e2e/debian-boot.test.ts makes with BOOTFLEET_BOOTSET_DIR set) into one boot set
# per overlay file: "offset,length" of every read tgtd made of it, in order, bytes.
#   sh bench/storm/boot-set/from-strace.sh strace.txt OUTDIR
# writes OUTDIR/<overlay file name>.csv for every file read and prints a summary line each.
set -eu
trace=$1
out=$2
mkdir -p "$out"
# 1234  pread64(12</tmp/.../overlays/t1-system.img>, ""..., 65536, 1048576) = 65536
# Only completed calls (an "= N" with N > 0); the bytes read is the result, not the request.
awk -v out="$out" '
  /pread64\([0-9]+<[^>]*>, / && / = [0-9]+$/ {
    path = $0; sub(/^[^<]*</, "", path); sub(/>.*$/, "", path)
    n = split($0, f, ", "); off = f[n]; sub(/\).*$/, "", off)
    got = $NF
    if (got + 0 <= 0) next
    name = path; sub(/^.*\//, "", name)
    file = out "/" name ".csv"
    if (!(file in seen)) { seen[file] = 1; print "offset,length" > file; files[++k] = file }
    print off "," got > file
    bytes[file] += got; reads[file]++
  }
  END {
    for (i = 1; i <= k; i++) printf "%s: %d reads, %.1f MiB\n", files[i], reads[files[i]], bytes[files[i]] / 1048576
  }
' "$trace"
