"""The DHCP DISCOVERs of the boot storm's clients, for bench/storm/client.ts.

A PXE ROM (and iPXE, before it has an address) sends its DISCOVER from 0.0.0.0:68 with its
own MAC as the Ethernet source; Node's dgram cannot, so this helper sends the frames on an
AF_PACKET socket of the client namespace's lower interface and reads the OFFERs there. One
process serves every client: client.ts writes one JSON request per line on stdin, this
prints one JSON answer per line on stdout, in the order the answers come.

  first    {"ready": true}                       (sockets open: the storm may start)
  request  {"id": 7, "mac": "02:bf:d0:00:00:07", "ipxe": false, "tries": 4}
  answer   {"id": 7, "ok": true, "ms": 1.9, "tries": 1, "file": "undionly.kpxe",
            "server": "10.98.0.1", "opt43": "<hex>"}

The receive socket carries a classic BPF filter (UDP to port 68 only): the same interface
also carries every client's TFTP, HTTP and iSCSI traffic, which Python must never see.
A DISCOVER is sent up to 4 times, waiting 4, 8, 16 and 32 s for an OFFER, as PXE 2.1
ROMs do: a client that got nothing in those 60 s would boot its next device.
Usage: python3 dhcp-raw.py IFNAME
"""

import json
import os
import select
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from dhcp_frame import discover_frame, opt, parse_bootreply  # noqa: E402

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33

PXE_VENDOR_CLASS = b"PXEClient:Arch:00000:UNDI:002001"
PARAM_LIST = bytes([1, 3, 6, 43, 54, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135, 175])

# ldh [12]; jeq 0x800; ldb [23]; jeq 17; ldh [36]; jeq 68; ret all; ret 0
# (IPv4 without options, as every DHCP server here sends)
BPF_UDP_TO_68 = [
    (0x28, 0, 0, 12), (0x15, 0, 5, 0x0800), (0x30, 0, 0, 23), (0x15, 0, 3, 17),
    (0x28, 0, 0, 36), (0x15, 0, 1, 68), (0x06, 0, 0, 0x40000), (0x06, 0, 0, 0),
]


def pxe_discover(mac, xid, ipxe):
    uuid = b"\x00" + mac * 2 + b"\xbf" * 4
    options = (opt(53, b"\x01") + opt(57, struct.pack("!H", 1472))
               + opt(55, PARAM_LIST) + opt(97, uuid) + opt(94, b"\x01\x02\x01")
               + opt(93, b"\x00\x00") + opt(60, PXE_VENDOR_CLASS))
    if ipxe:
        # What iPXE adds (user class "iPXE" and its encapsulated option 175).
        options += opt(77, b"iPXE") + opt(175, opt(19, b"\x01") + opt(21, b"\x01"))
    return discover_frame(mac, xid, options)


def parse_offer(frame):
    """(xid, chaddr, file, server, opt43) of a DHCP OFFER to port 68, or None."""
    got = parse_bootreply(frame)
    if got is None:
        return None
    xid, chaddr, options, d = got
    if options.get(53, b"\0")[0] != 2:
        return None
    file = options.get(67) or d[108:236].split(b"\0", 1)[0]
    server = options.get(54) or d[20:24]
    return (xid, chaddr, file.decode("latin1"),
            socket.inet_ntoa(bytes(server)), options.get(43, b"").hex())


def main():
    ifname = sys.argv[1]
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    tx.bind((ifname, 0))
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    prog = b"".join(struct.pack("HBBI", *ins) for ins in BPF_UDP_TO_68)
    import ctypes
    buf = ctypes.create_string_buffer(prog)
    fprog = struct.pack("HL", len(BPF_UDP_TO_68), ctypes.addressof(buf))
    rx.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    rx.bind((ifname, ETH_P_ALL))
    rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    rx.setblocking(False)
    poll = select.poll()
    poll.register(rx, select.POLLIN)
    poll.register(sys.stdin.fileno(), select.POLLIN)
    pending = {}  # xid -> request state
    seq = (os.getpid() & 0xFFFF) << 16
    stdin_buf = b""
    stdin_open = True
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()

    def send(state):
        state["tries"] += 1
        state["sent"] = time.monotonic()
        state["deadline"] = state["sent"] + 4.0 * 2 ** (state["tries"] - 1)
        tx.send(pxe_discover(state["mac"], state["xid"], state["ipxe"]))

    def answer(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    while stdin_open or pending:
        now = time.monotonic()
        timeout = min([s["deadline"] for s in pending.values()], default=now + 1.0)
        for fd, _ in poll.poll(max(0, int((timeout - now) * 1000)) + 1):
            if fd == sys.stdin.fileno():
                chunk = os.read(fd, 65536)
                if not chunk:
                    stdin_open = False
                    poll.unregister(fd)
                    continue
                stdin_buf += chunk
                while b"\n" in stdin_buf:
                    line, stdin_buf = stdin_buf.split(b"\n", 1)
                    req = json.loads(line)
                    seq += 1
                    state = {"id": req["id"], "mac": bytes.fromhex(req["mac"].replace(":", "")),
                             "ipxe": bool(req.get("ipxe")), "max": int(req.get("tries", 4)),
                             "xid": seq & 0xFFFFFFFF, "tries": 0, "first": time.monotonic()}
                    pending[state["xid"]] = state
                    send(state)
            else:
                while True:
                    try:
                        frame = rx.recv(65535)
                    except BlockingIOError:
                        break
                    got = parse_offer(frame)
                    if got is None or got[0] not in pending:
                        continue
                    state = pending[got[0]]
                    if got[1] != state["mac"]:
                        continue
                    del pending[got[0]]
                    answer({"id": state["id"], "ok": True,
                            "ms": (time.monotonic() - state["sent"]) * 1000,
                            "totalMs": (time.monotonic() - state["first"]) * 1000,
                            "tries": state["tries"], "file": got[2], "server": got[3],
                            "opt43": got[4]})
        now = time.monotonic()
        for xid, state in list(pending.items()):
            if state["deadline"] <= now:
                if state["tries"] >= state["max"]:
                    del pending[xid]
                    answer({"id": state["id"], "ok": False, "tries": state["tries"]})
                else:
                    send(state)


main()
