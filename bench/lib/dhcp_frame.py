"""Raw DHCP frames for the benches' Python clients (bench/dhcp/loadgen.py,
bench/storm/dhcp-raw.py).

A PXE ROM sends its DISCOVER from 0.0.0.0:68 with its own MAC as the Ethernet source, before
it has an address; the benches reproduce that on AF_PACKET sockets, so they build the whole
Ethernet/IPv4/UDP frame here and read the server's BOOTREPLY from the raw frame. Each bench
chooses its own options (what ROM it plays); framing and parsing are the same for both.
Import it with the folder of this file on sys.path (both scripts add ../lib themselves).
"""

import struct

BROADCAST = b"\xff" * 6
DHCP_MAGIC = b"\x63\x82\x53\x63"


def checksum(data):
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def opt(code, value):
    """One DHCP option: code, length, value."""
    return bytes([code, len(value)]) + value


def discover_frame(mac, xid, options):
    """A broadcast BOOTREQUEST from `mac` (6 bytes) as an Ethernet frame, 0.0.0.0:68 to
    255.255.255.255:67, with the broadcast flag set. `options` are the DHCP options after the
    magic cookie, without the end option (added here)."""
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000,
                        b"\0" * 4, b"\0" * 4, b"\0" * 4, b"\0" * 4, mac + b"\0" * 10,
                        b"\0" * 64, b"\0" * 128)
    payload = bootp + DHCP_MAGIC + options + b"\xff"
    payload += b"\0" * max(0, 300 - len(payload))  # BOOTP minimum, as ROMs pad
    src, dst = b"\0" * 4, b"\xff" * 4
    udp_len = 8 + len(payload)
    udp = struct.pack("!HHHH", 68, 67, udp_len, 0) + payload
    csum = checksum(src + dst + struct.pack("!BBH", 0, 17, udp_len) + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), xid & 0xFFFF, 0, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return BROADCAST + mac + b"\x08\x00" + ip + udp


def parse_bootreply(frame):
    """(xid, chaddr, options, bootp) of a BOOTREPLY in an IPv4/UDP frame to port 68, or None.
    `options` maps each option code to its value (the last one wins); `bootp` is the UDP
    payload, for the fixed fields (file, siaddr...)."""
    if len(frame) < 14 + 20 + 8 + 240 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    if ip[9] != 17:
        return None
    udp = ip[(ip[0] & 0x0F) * 4:]
    if struct.unpack("!H", udp[2:4])[0] != 68:
        return None
    d = udp[8:]
    if len(d) < 240 or d[0] != 2 or d[236:240] != DHCP_MAGIC:
        return None
    options = {}
    k = 240
    while k + 1 < len(d):
        code = d[k]
        if code == 255:
            break
        if code == 0:
            k += 1
            continue
        n = d[k + 1]
        options[code] = d[k + 2:k + 2 + n]
        k += 2 + n
    return struct.unpack("!I", d[4:8])[0], bytes(d[28:34]), options, d
