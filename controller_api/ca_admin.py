"""The controller's side of a CA rotation (controller_api.ca_rotation): which nodes hold which
CA's certificate, when the new CA may start issuing, and the admin answers.

The new CA starts issuing once every live node has acknowledged a desired state that holds the
bundle (checked after each Ack): from then on a node may be shown a new-CA certificate, and
it trusts that CA already. A node that is not connected takes the bundle when it reconnects
(the controller's TLS certificate is still from the old CA, which it trusts).

A node that never takes the bundle (it refuses it, or runs an agent that ignores it) would keep
the rotation distributing for ever: after `ca_distribute_timeout` the rotation is abandoned
(the old CA alone again, which never stopped issuing), and the status says so, naming the
nodes. While it waits, the status names each node it waits for and why.
"""

from __future__ import annotations

import json
import logging

from cryptography import x509

from controller_api.core import ControllerCore
from controller_api.gen.lispmesh.v1 import admin_pb2
from controller_api.pki import ControllerPki
from controller_api.settings import rfc3339
from controller_api.store import CONTROLLER, Conflict, NodeRow, ObjectWrite, StoreError

log = logging.getLogger("lispmesh.controller")

LIVE_WINDOW = 90.0  # seconds: three status reports (every 30 s)
OUTCOME = "ca-rotation"  # CONTROLLER object: how the last unfinished rotation ended


class CaRefused(StoreError):
    """A rotation step cannot be done now (one line: why, and what to do)."""


def _pki(core: ControllerCore) -> ControllerPki:
    if core.pki is None:
        raise CaRefused("the controller has no CA yet (starting)")
    return core.pki


def node_issuers(core: ControllerCore) -> dict[str, str]:
    """Live (not revoked) node id -> fingerprint of the trusted CA that issued its certificate
    ("" if none of them did)."""
    pki = _pki(core)
    out: dict[str, str] = {}
    for node in core.store.list_nodes():
        if node.revoked:
            continue
        entry = pki.issuer_of(x509.load_pem_x509_certificate(node.cert_pem.encode()))
        out[node.node_id] = entry.fingerprint if entry is not None else ""
    return out


def _without_bundle(core: ControllerCore) -> list[NodeRow]:
    """Live nodes that have not acknowledged a desired state holding the current bundle. Live:
    connected here, or heard of lately by any replica (on etcd a node may be connected to
    another one; its status reports keep `last_seen` fresh)."""
    out = []
    now = core.clock()
    for row in core.store.list_nodes():
        heard = row.last_seen is not None and now - row.last_seen < LIVE_WINDOW
        if row.revoked or not (core.streams[row.node_id] > 0 or heard):
            continue
        state = core.desired_state(row)  # the current document (with the bundle), versioned
        if row.applied_version < state.version or row.apply_error:
            out.append(row)
    return out


def _waiting(core: ControllerCore) -> list[str]:
    """Each live node the rotation waits for, "NAME: why"."""
    return [
        f"{row.name}: "
        + (f"refused it: {row.apply_error}" if row.apply_error else
           f"has not acknowledged it (applied version {row.applied_version})")
        for row in _without_bundle(core)
    ]  # fmt: skip


def _abandon_if_overdue(core: ControllerCore) -> bool:
    """Past its deadline with nodes still without the bundle: abandon the rotation."""
    pki = core.pki
    since = pki.distributing_since if pki is not None else None
    now = core.clock()
    if pki is None or since is None or now < since + core.settings.ca_distribute_timeout:
        return False
    waiting = _waiting(core)
    if not waiting:
        return False  # every node has it: maybe_switch switches
    new = pki.entries[1].fingerprint[:16]
    try:
        pki.abandon()
    except Conflict:  # another replica switched or abandoned it meanwhile
        pki.refresh()
        return False
    line = (
        f"rotation to CA {new} abandoned at {rfc3339(now)}, {core.settings.ca_distribute_timeout:g}"
        f" s after it began: {len(waiting)} live node(s) had not taken its bundle: "
        + "; ".join(waiting[:5])
        + (" ..." if len(waiting) > 5 else "")
    )
    log.warning("CA %s", line)
    doc = json.dumps({"at": now, "line": line})
    core.store.commit_objects([ObjectWrite(CONTROLLER, OUTCOME, doc)])
    core.notify_all()  # every node gets the old bundle back
    return True


def maybe_switch(core: ControllerCore) -> bool:
    """While the new CA is only trusted: make it the issuer once every connected node took the
    bundle; every node is then told (and those on the old CA renew). Past the deadline with
    nodes still without it, the rotation is abandoned instead."""
    pki = core.pki
    if pki is None or pki.phase != "distributing" or _abandon_if_overdue(core):
        return False
    if _without_bundle(core):
        return False
    pki.switch()
    log.info("CA rotation: the new CA %s issues from now on", pki.issuer.fingerprint[:16])
    core.notify_all()
    return True


def status(core: ControllerCore) -> admin_pb2.CaStatus:
    pki = _pki(core)
    pki.refresh()
    _abandon_if_overdue(core)
    issuers = node_issuers(core)
    tls = pki.tls_ca
    cas = []
    for entry in pki.entries:
        by = ""
        if entry.cross is not None:
            by = next(
                (o.fingerprint for o in pki.entries if o is not entry and pki.issuer_of(entry.cross)
                 is o), "",
            )  # fmt: skip
        cas.append(
            admin_pb2.CaInfo(
                fingerprint=entry.fingerprint,
                subject=entry.certificate.subject.rfc4514_string(),
                not_after=rfc3339(entry.certificate.not_valid_after_utc.timestamp()),
                issuing=entry is pki.issuer,
                serves_tls=entry is tls,
                nodes=sum(1 for fp in issuers.values() if fp == entry.fingerprint),
                cross_signed_by=by,
            )
        )
    out = admin_pb2.CaStatus(
        cas=cas,
        phase=pki.phase,
        nodes_on_old_ca=sum(1 for fp in issuers.values() if fp != pki.issuer.fingerprint),
        nodes_without_bundle=len(_without_bundle(core)) if pki.phase != "stable" else 0,
    )
    since = pki.distributing_since
    if since is not None:
        out.distributing_since = rfc3339(since)
        out.distribute_deadline = rfc3339(since + core.settings.ca_distribute_timeout)
        out.waiting_for.extend(_waiting(core))
    record = core.store.get_object(CONTROLLER, OUTCOME)
    if record is not None:
        out.last_outcome = str(json.loads(record.value).get("line", ""))
    return out


def rotate(core: ControllerCore, finish: bool, force: bool, who: str) -> admin_pb2.CaStatus:
    pki = _pki(core)
    pki.refresh()
    _abandon_if_overdue(core)
    if not finish:
        pki.rotate(core.clock())
        log.info("CA rotation started by %s: new CA %s", who, pki.entries[1].fingerprint[:16])
        core.notify_all()  # every node gets the bundle
        maybe_switch(core)  # at once if no node is connected
        return status(core)
    if pki.phase == "stable":
        raise CaRefused("no CA rotation to finish (start one with: ca rotate)")
    if pki.phase == "distributing":
        waiting = _waiting(core)
        since = pki.distributing_since or core.clock()
        raise CaRefused(
            f"the new CA does not issue yet: {len(waiting)} connected node(s) have not taken the "
            f"bundle ({'; '.join(waiting[:3])}); abandoned at "
            f"{rfc3339(since + core.settings.ca_distribute_timeout)} if they still have not"
        )
    on_old = sum(1 for fp in node_issuers(core).values() if fp != pki.issuer.fingerprint)
    if on_old and not force:
        raise CaRefused(
            f"{on_old} live node(s) still hold a certificate from the old CA: wait for them to "
            "renew (see ca status), or --force (they must enroll again)"
        )
    old = [e.fingerprint[:16] for e in pki.entries[1:]]
    pki.finish()
    log.info("CA rotation finished by %s: CA %s dropped%s", who, ", ".join(old),
             f" ({on_old} node(s) on it, forced)" if on_old else "")  # fmt: skip
    core.notify_all()
    return status(core)
