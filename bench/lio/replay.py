#!/usr/bin/env python3
"""Replays a boot set on many disks at once, as a boot storm reads them (bench/lio/run.ts).

    replay.py [--direct] [--whole BYTES] BOOTSET.csv DISK...

One thread per disk reads the boot set's `offset,length` ranges in their recorded order
(or, with --whole, the first BYTES in 1 MiB reads). --direct opens with O_DIRECT, as LIO's
block backstore reaches a dm-snapshot disk (no page cache of the disk's own); without it
reads are buffered, as LIO's fileio backstore with write_back reads a reflink clone.
Prints one JSON line: bytes read in all and seconds.
"""
import json
import mmap
import os
import sys
import threading
import time

SECTOR = 512
CHUNK = 1 << 20


def ranges_of(path, whole):
    if whole:
        return [(o, min(CHUNK, whole - o)) for o in range(0, whole, CHUNK)]
    out = []
    with open(path) as f:
        for i, line in enumerate(f):
            line = line.strip()
            if not line or (i == 0 and line.startswith("offset")):
                continue
            off, length = (int(x) for x in line.split(","))
            if off % SECTOR or length % SECTOR:
                raise SystemExit(f"{path} line {i + 1}: {line} is not whole sectors")
            out.append((off, length))
    return out


def main():
    args = sys.argv[1:]
    direct = "--direct" in args
    args = [a for a in args if a != "--direct"]
    whole = 0
    if "--whole" in args:
        i = args.index("--whole")
        whole = int(args[i + 1])
        del args[i : i + 2]
    bootset, disks = args[0], args[1:]
    ranges = ranges_of(bootset, whole)
    flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
    done = [0] * len(disks)
    errors = []

    def read_all(k, disk):
        try:
            # Anonymous mmap: page-aligned, as O_DIRECT wants its buffer.
            buf = mmap.mmap(-1, max(length for _, length in ranges))
            fd = os.open(disk, flags)
            try:
                for off, length in ranges:
                    n = os.preadv(fd, [memoryview(buf)[:length]], off)
                    if n != length:
                        raise OSError(f"{disk}: short read at {off}: {n} of {length}")
                    done[k] += n
            finally:
                os.close(fd)
        except Exception as e:  # reported below, after every thread ended
            errors.append(f"{disk}: {e}")

    started = time.monotonic()
    threads = [threading.Thread(target=read_all, args=(k, d)) for k, d in enumerate(disks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit("\n".join(errors))
    print(json.dumps({"bytes": sum(done), "seconds": time.monotonic() - started}))


main()
