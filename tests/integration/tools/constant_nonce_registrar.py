"""A lispers.net-like xTR for tests: Map-Registers that carry the same nonce every time.

Run inside a lab namespace: `python constant_nonce_registrar.py MS RLOC PREFIX KEY_FILE N`.
It sends N refreshes of one registration (want-map-notify, so each refresh's acceptance is
seen), each followed by three registrations under the same nonce that would change state (other
RLOC, other TTL, TTL 0 = removal), and prints one JSON line: how many Map-Notifies it got and
whether each echoed the refreshed registration (a replay that was accepted would echo its own).
"""

from __future__ import annotations

import json
import socket
import sys
from ipaddress import IPv4Address, ip_network
from pathlib import Path

from lisp import EidRecord, MapNotify, MapRegister, RlocRecord, auth

NONCE = 0x11223344
WAIT = 3.0


def main() -> int:
    ms, rloc, prefix_text, key_file, count = sys.argv[1:6]
    key = Path(key_file).read_bytes().strip()
    prefix = ip_network(prefix_text)
    home = (RlocRecord(IPv4Address(rloc), local=True),)
    elsewhere = (RlocRecord(IPv4Address("10.77.0.99"), local=True),)

    def signed(rlocs: tuple[RlocRecord, ...], ttl: int = 3) -> bytes:
        record = EidRecord(prefix.network_address, prefix.prefixlen, rlocs, ttl)
        register = MapRegister(NONCE, (record,), want_map_notify=True, ttl_timeout=True)
        return auth.sign(register.encode(), key)

    refresh = signed(home)
    replays = [signed(elsewhere), signed(home, ttl=30), signed(home, ttl=0)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((rloc, 0))
    sock.settimeout(WAIT)
    notifies, echoed_refresh = 0, 0
    for _ in range(int(count)):
        sock.sendto(refresh, (ms, 4342))
        notify = MapNotify.decode(sock.recv(65535))  # the refresh's (replays come after it)
        notifies += 1
        record = notify.records[0]
        if notify.nonce == NONCE and [r.address for r in record.rlocs] == [home[0].address]:
            echoed_refresh += record.ttl == 3
        for replayed in replays:
            sock.sendto(replayed, (ms, 4342))
    print(json.dumps({"notifies": notifies, "echoed_refresh": echoed_refresh}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
