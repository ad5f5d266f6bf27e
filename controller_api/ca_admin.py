"""The controller's side of a CA rotation (controller_api.ca_rotation): which nodes hold which
CA's certificate, when the new CA may start issuing, and the admin answers.

The new CA starts issuing once every live node has acknowledged a desired state that holds the
bundle (checked after each Ack): from then on a node may be shown a new-CA certificate, and
it trusts that CA already. A node that is not connected takes the bundle when it reconnects
(the controller's TLS certificate is still from the old CA, which it trusts).
"""

from __future__ import annotations

import logging

from cryptography import x509

from controller_api.core import ControllerCore
from controller_api.gen.lispmesh.v1 import admin_pb2
from controller_api.pki import ControllerPki
from controller_api.settings import rfc3339
from controller_api.store import NodeRow, StoreError

log = logging.getLogger("lispmesh.controller")

LIVE_WINDOW = 90.0  # seconds: three status reports (every 30 s)


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


def maybe_switch(core: ControllerCore) -> bool:
    """While the new CA is only trusted: make it the issuer once every connected node took the
    bundle; every node is then told (and those on the old CA renew)."""
    pki = core.pki
    if pki is None or pki.phase != "distributing" or _without_bundle(core):
        return False
    pki.switch()
    log.info("CA rotation: the new CA %s issues from now on", pki.issuer.fingerprint[:16])
    core.notify_all()
    return True


def status(core: ControllerCore) -> admin_pb2.CaStatus:
    pki = _pki(core)
    pki.refresh()
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
    return admin_pb2.CaStatus(
        cas=cas,
        phase=pki.phase,
        nodes_on_old_ca=sum(1 for fp in issuers.values() if fp != pki.issuer.fingerprint),
        nodes_without_bundle=len(_without_bundle(core)) if pki.phase != "stable" else 0,
    )


def rotate(core: ControllerCore, finish: bool, force: bool, who: str) -> admin_pb2.CaStatus:
    pki = _pki(core)
    pki.refresh()
    if not finish:
        pki.rotate(core.clock())
        log.info("CA rotation started by %s: new CA %s", who, pki.entries[1].fingerprint[:16])
        core.notify_all()  # every node gets the bundle
        maybe_switch(core)  # at once if no node is connected
        return status(core)
    if pki.phase == "stable":
        raise CaRefused("no CA rotation to finish (start one with: ca rotate)")
    if pki.phase == "distributing":
        waiting = len(_without_bundle(core))
        raise CaRefused(
            f"the new CA does not issue yet: {waiting} connected node(s) have not taken the "
            "bundle (see ca status)"
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
