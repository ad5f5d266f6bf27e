"""RLOC-probing: liveness probes, keyed probes (rekeying, warm start) and answering SMRs."""

from __future__ import annotations

import logging
from ipaddress import ip_address
from typing import TYPE_CHECKING

from lisp import MapRequest, RequestRecord
from lisp.address import Address
from lisp.map_cache import MapCacheEntry
from mesh.itr_resolve import itr_rlocs
from mesh.keys import random_nonce
from mesh.xtr_types import CONTROL_PORT, SMR_INTERVAL, Pending

if TYPE_CHECKING:
    from mesh.xtr import Xtr

log = logging.getLogger("lispmesh.xtr")


def probe(xtr: Xtr, with_key: bool = False, only: set[str] | None = None) -> None:
    """RLOC-probe what is due. `with_key` probes every mapping (or those with an RLOC in
    `only`) at each of its RLOCs carrying our current ITR key: that is how rekeying, and
    re-keying after a restart or an SMR, happen without the map-resolver."""
    if with_key:
        for entry in list(xtr.map_cache):
            if entry.negative:
                continue
            for record in entry.rlocs:
                rloc = str(record.address)
                if only is None or rloc in only:
                    xtr.prober.track(rloc, xtr.now)
                    send_probe(xtr, entry, rloc, with_key=True)
        return
    due = xtr.prober.due(xtr.now)
    if not due:
        return
    targets: dict[str, MapCacheEntry] = {}
    for entry in xtr.map_cache:
        if entry.negative:
            continue
        for record in entry.rlocs:
            targets.setdefault(str(record.address), entry)
    for target in due:
        found = targets.get(target)
        if found is None:
            xtr.prober.untrack(target)
            continue
        send_probe(xtr, found, target, with_key=False)


def send_probe(xtr: Xtr, entry: MapCacheEntry, rloc: str, with_key: bool) -> int | None:
    """RLOC-probe `rloc` for `entry`; returns the probe's nonce (None: no uplink)."""
    address = ip_address(rloc)
    local = xtr._local_for(address.version)
    if local is None:
        return None
    nonce = random_nonce()
    rlocs: tuple[Address, ...]
    rlocs = itr_rlocs(xtr, nonce, local) if with_key else (local.address,)
    request = MapRequest(
        nonce=nonce,
        itr_rlocs=rlocs,
        records=(
            RequestRecord(xtr._eid_address(entry.prefix.network_address), entry.prefix.prefixlen),
        ),
        source_eid=xtr._eid_address(xtr._our_eid(entry.prefix.version)),
        probe=True,
    )
    xtr.prober.sent(rloc, nonce, xtr.now)
    xtr.pending[nonce] = Pending(
        "probe",
        xtr.keys.epoch.key_id if with_key else None,
        xtr.now,
        rloc=rloc,
        eid=(entry.iid, entry.prefix),
    )
    xtr.stats["probes"] += 1
    xtr.transport.send_control(local, request.encode(), (rloc, CONTROL_PORT))
    return nonce


def rekey(xtr: Xtr) -> None:
    epoch = xtr.keys.rotate(xtr.now)
    log.info("rekeying: new ITR key-id %d", epoch.key_id)
    # Make-before-break: the old key keeps sealing until each peer answers the new one.
    probe(xtr, with_key=True)


def on_smr(xtr: Xtr, source: tuple[str, int]) -> None:
    """An ETR lost our key: probe its RLOC with our current key (rate-limited)."""
    last = xtr.smr_handled.get(source[0], float("-inf"))
    if xtr.now - last < SMR_INTERVAL:
        xtr.drops["smr-rate-limited"] += 1
        return
    if len(xtr.smr_handled) > 4096:
        xtr.smr_handled.clear()
    xtr.smr_handled[source[0]] = xtr.now
    if source[0] not in xtr.prober.tracked():
        xtr.drops["smr-unknown-rloc"] += 1
        return
    xtr.stats["smr-received"] += 1
    probe(xtr, with_key=True, only={source[0]})
