#!/usr/bin/env python3
"""Prints N free TCP ports on 127.0.0.1 (default 4), space-separated.

They are picked at random *below* the kernel's ephemeral range
(/proc/sys/net/ipv4/ip_local_port_range), so that outgoing connections of
other processes (which take ephemeral ports) cannot grab one between this
check and the server binding it, and each is checked free by binding it.
"""

import random
import socket
import sys


def ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    hi = max(ephemeral_low(), 11000)
    lo = 10000
    chosen = []
    held = []
    for _ in range(10000):
        if len(chosen) == n:
            break
        port = random.randrange(lo, hi)
        if port in chosen:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        held.append(s)
        chosen.append(port)
    for s in held:
        s.close()
    if len(chosen) < n:
        sys.exit("no free ports found")
    print(" ".join(map(str, chosen)))


if __name__ == "__main__":
    main()
