"""PXE DHCPDISCOVER load generator for bench/dhcp/run.ts, run inside the client namespace.

Frames are built here (not by the code under test) and sent on an AF_PACKET socket, so the
IPv4 source is 0.0.0.0:68 as a PXE ROM's is, and each frame's Ethernet source is the
client's own MAC (the bridge learns 1,000 MACs, as it would on a real LAN). Replies are read
on a second AF_PACKET socket: the client interface has no address, like a PXE ROM before its
lease, so the kernel's IP stack would not hand a broadcast OFFER to a UDP socket anyway.

Usage: python3 loadgen.py IFNAME JSON_CONFIG; prints one JSON object.
  {"mode": "probe", "mac": 0}                     one DISCOVER, the decoded reply
  {"mode": "window", "macs": [0, 1000], "window": 32, "timeout": 1.0}
                                                 closed loop: a fixed number in flight
  {"mode": "ramp", "macs": [0, 1000], "rates": [500, 1000], "seconds": 2, "timeout": 1.0}
                                                 open loop: sends on a fixed schedule
"""

import json
import os
import select
import socket
import struct
import sys
import time
from collections import deque

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from dhcp_frame import discover_frame as pxe_discover_frame, opt, parse_bootreply  # noqa: E402

ETH_P_IP = 0x0800
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
PACKET_OUTGOING = 4

# What an Intel/iPXE-style PXE 2.1 ROM sends in its first DISCOVER (PXE spec 2.1, RFC 4578).
VENDOR_CLASS = b"PXEClient:Arch:00000:UNDI:002001"
PARAM_LIST = bytes([1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51,
                    54, 58, 59, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135])


def mac_of(i):
    # Locally administered, unicast (RFC 7042): no clash with a real vendor's MAC.
    return bytes([0x02, 0xBF, 0xD0, (i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF])


def uuid_of(i):
    return struct.pack("!IHHQ", 0xBF000000 | i, 0x1234, 0x4000 | (i & 0xFFF), 0x8000000000000000 | i)


def discover_frame(i, xid):
    """The first DISCOVER of PXE client number i."""
    mac = mac_of(i)
    options = (opt(53, b"\x01") + opt(57, struct.pack("!H", 1464))
               + opt(55, PARAM_LIST) + opt(97, b"\x00" + uuid_of(i)) + opt(94, b"\x01\x02\x01")
               + opt(93, b"\x00\x00") + opt(60, VENDOR_CLASS))
    return pxe_discover_frame(mac, xid, options)


def parse_reply(frame):
    """(xid, chaddr, message type, options) of a BOOTREPLY to port 68, or None."""
    got = parse_bootreply(frame)
    if got is None:
        return None
    xid, chaddr, options, d = got
    mtype = options.get(53, b"\0")[0]
    return xid, chaddr, mtype, options, d


class Client:
    def __init__(self, ifname):
        self.tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self.tx.bind((ifname, 0))
        self.tx.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 4 << 20)
        self.rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
        self.rx.bind((ifname, ETH_P_IP))
        self.rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        self.rx.setblocking(False)
        self.poll = select.poll()
        self.poll.register(self.rx, select.POLLIN)
        self.xid_base = (os.getpid() << 16) & 0xFFFF0000
        self.seq = 0
        self.pending = {}  # xid -> (send time ns, mac index)
        self.sent_at = deque()  # (send time ns, xid), in send order, for timeouts
        self.latencies = []  # ns
        self.answered = 0
        self.lost = 0
        self.wrong = 0  # replies to our xid naming another chaddr, or not an OFFER
        self.late_or_dup = 0
        self.send_errors = 0
        self.last_answer = 0

    def send(self, i):
        self.seq += 1
        xid = (self.xid_base + self.seq) & 0xFFFFFFFF
        frame = discover_frame(i, xid)
        now = time.monotonic_ns()
        try:
            self.tx.send(frame)
        except OSError:
            self.send_errors += 1
            return False
        self.pending[xid] = (now, i)
        self.sent_at.append((now, xid))
        return True

    def drain(self):
        """Reads every queued reply; returns how many of them answered a pending request."""
        got = 0
        while True:
            try:
                frame, addr = self.rx.recvfrom(2048)
            except BlockingIOError:
                return got
            now = time.monotonic_ns()
            if addr[2] == PACKET_OUTGOING:
                continue
            r = parse_reply(frame)
            if r is None:
                continue
            xid, chaddr, mtype, _, _ = r
            p = self.pending.pop(xid, None)
            if p is None:
                self.late_or_dup += 1
                continue
            if mtype != 2 or chaddr != mac_of(p[1]):
                self.wrong += 1
                continue
            self.latencies.append(now - p[0])
            self.last_answer = now
            self.answered += 1
            got += 1

    def expire(self, timeout_ns):
        """Counts requests unanswered after the timeout as lost; returns how many."""
        now = time.monotonic_ns()
        n = 0
        while self.sent_at and now - self.sent_at[0][0] > timeout_ns:
            _, xid = self.sent_at.popleft()
            if self.pending.pop(xid, None) is not None:
                self.lost += 1
                n += 1
        return n

    def wait(self, ms):
        self.poll.poll(max(0, ms))

    def summary(self, seconds):
        lat = sorted(self.latencies)

        def pct(p):
            if not lat:
                return None
            return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] / 1e6

        return {
            "sent": self.seq,
            "answered": self.answered,
            "lost": self.lost,
            "wrong": self.wrong,
            "lateOrDuplicate": self.late_or_dup,
            "sendErrors": self.send_errors,
            "seconds": seconds,
            "offersPerSec": self.answered / seconds if seconds > 0 else 0,
            "p50ms": pct(50),
            "p99ms": pct(99),
            "maxms": lat[-1] / 1e6 if lat else None,
        }


def probe(ifname, cfg):
    c = Client(ifname)
    c.send(cfg.get("mac", 0))
    deadline = time.monotonic() + cfg.get("timeout", 3.0)
    while time.monotonic() < deadline:
        c.wait(50)
        while True:
            try:
                frame, addr = c.rx.recvfrom(2048)
            except BlockingIOError:
                break
            if addr[2] == PACKET_OUTGOING:
                continue
            r = parse_reply(frame)
            if r is None or r[0] not in c.pending:
                continue
            xid, chaddr, mtype, options, d = r
            return {
                "answered": True,
                "messageType": mtype,
                "chaddrMatches": chaddr == mac_of(cfg.get("mac", 0)),
                "siaddr": socket.inet_ntoa(d[20:24]),
                "file": d[108:236].split(b"\0", 1)[0].decode("latin1"),
                "options": sorted(options),
                "vendorClass": options.get(60, b"").decode("latin1"),
                "serverId": socket.inet_ntoa(options[54]) if len(options.get(54, b"")) == 4 else None,
            }
    return {"answered": False}


def window(ifname, cfg):
    """Closed loop: `window` requests in flight; each OFFER or time-out frees a slot."""
    c = Client(ifname)
    lo, hi = cfg["macs"]
    todo = deque(range(lo, hi))
    timeout_ns = int(cfg.get("timeout", 1.0) * 1e9)
    t0 = time.monotonic_ns()
    while todo or c.pending:
        while todo and len(c.pending) < cfg["window"]:
            c.send(todo.popleft())
        c.wait(5)
        c.drain()
        c.expire(timeout_ns)
    # Up to the last answer or time-out: a lost request really did hold its slot that long.
    return c.summary((time.monotonic_ns() - t0) / 1e9)


def ramp(ifname, cfg):
    """Open loop: for each rate, send on a fixed schedule for `seconds`, whatever comes back."""
    lo, hi = cfg["macs"]
    n = hi - lo
    timeout = cfg.get("timeout", 1.0)
    timeout_ns = int(timeout * 1e9)
    steps = []
    k = 0
    for rate in cfg["rates"]:
        c = Client(ifname)
        total = int(rate * cfg["seconds"])
        interval = 1e9 / rate
        t0 = time.monotonic_ns()
        i = 0
        behind = 0
        while i < total:
            now = time.monotonic_ns()
            due = min(total, int((now - t0) / interval) + 1)
            if due - i > 1:
                behind = max(behind, due - i)
            while i < due:
                c.send(lo + k % n)
                k += 1
                i += 1
            c.drain()
            c.expire(timeout_ns)
            next_at = t0 + i * interval
            c.wait(int((next_at - time.monotonic_ns()) / 1e6))
        sent_end = time.monotonic_ns()
        deadline = time.monotonic() + timeout
        while c.pending and time.monotonic() < deadline:
            c.wait(10)
            c.drain()
            c.expire(timeout_ns)
        c.expire(0)
        # Answers over the span they arrived in: a server that falls behind keeps answering
        # after the schedule ended, and that tail belongs to its rate.
        s = c.summary((max(sent_end, c.last_answer) - t0) / 1e9)
        # Offered load actually achieved by this generator, to tell its limit from the server's.
        s["rate"] = rate
        s["sendRate"] = total / ((sent_end - t0) / 1e9)
        s["maxBacklog"] = behind
        steps.append(s)
        time.sleep(0.3)
    return {"steps": steps}


def main():
    ifname, cfg = sys.argv[1], json.loads(sys.argv[2])
    mode = cfg["mode"]
    result = {"probe": probe, "window": window, "ramp": ramp}[mode](ifname, cfg)
    sys.stdout.write(json.dumps(result) + "\n")


main()
