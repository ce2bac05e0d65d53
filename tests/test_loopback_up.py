"""``tests/loopback_up.py`` brings a new network namespace's loopback up without iproute2.

Checked where it matters: inside ``unshare``, a TCP connection to 127.0.0.1 fails before the helper
runs and succeeds after it, with ``PATH`` emptied so that no ``ip`` command could be doing the work.
"""
from __future__ import annotations

import shlex
import subprocess
import sys

from ray_namespace import LOOPBACK_UP, unshare_flag

CONNECT = ("import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
           "socket.create_connection(s.getsockname(), timeout=5); print('connected')")


def test_the_loopback_comes_up_in_a_new_namespace_without_the_ip_command():
    flag = unshare_flag()
    script = (f"{shlex.quote(sys.executable)} -c \"{CONNECT}\" || echo 'down before'; "
              f"{LOOPBACK_UP} && {shlex.quote(sys.executable)} -c \"{CONNECT}\"")
    unshare = subprocess.run(["which", "unshare"], capture_output=True, text=True).stdout.strip()
    proc = subprocess.run([unshare, flag, "/bin/sh", "-c", script], env={"PATH": ""}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["down", "before", "connected"], proc.stdout + proc.stderr[-2000:]
