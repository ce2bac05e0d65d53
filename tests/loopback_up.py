"""Bring the loopback interface up, as ``ip link set lo up`` does, without needing iproute2.

Run inside a fresh network namespace (``unshare -n`` or ``unshare -rn``), where ``lo`` starts down.
The first GPU machine lent to this project had ``unshare`` but no ``ip`` command, so the Ray tests
were skipped there; this uses the kernel's interface ioctls (netdevice(7): SIOCGIFFLAGS and
SIOCSIFFLAGS on a ``struct ifreq``) from the standard library instead. Exit 1 with the reason if
the kernel refuses (no CAP_NET_ADMIN in this namespace).
"""
from __future__ import annotations

import fcntl
import socket
import struct
import sys

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
# struct ifreq on Linux: a 16-byte interface name, then a 24-byte union whose first member here is
# the short ifr_flags (40 bytes in all on 64-bit machines).
IFREQ = "16sH22x"


def bring_loopback_up(name: bytes = b"lo") -> int:
    """Set IFF_UP on interface ``name``; return its flags afterwards."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        _, flags = struct.unpack(IFREQ, fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack(IFREQ, name, 0)))
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack(IFREQ, name, flags | IFF_UP))
        _, flags = struct.unpack(IFREQ, fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack(IFREQ, name, 0)))
    return flags


if __name__ == "__main__":
    try:
        up = bring_loopback_up() & IFF_UP
    except OSError as error:
        sys.exit(f"cannot bring the loopback interface up: {error}")
    sys.exit(0 if up else "the loopback interface is still down after setting IFF_UP")
