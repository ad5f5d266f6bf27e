"""Signed NAT bindings: what a node behind a NAT and its RTR prove to each other (mesh.rtr).

The node's keepalive (a data-plane Info-Request) carries a proof, signed with its node key, over
(nonce, time, the RTR's name, the uplink); the RTR's answer carries one over (nonce, time, its own
name, the uplink, the outside address:port it saw). Both are mesh.identity transcripts of role
"binding", a role no key-exchange proof has, so neither can be replayed as the other. Whose binding
moves is the certificate's name, never the source address; the RTR is whoever holds the
certificate of the name the node was configured with.
"""

from __future__ import annotations

from certs.format import IdentityError
from lisp.lcaf import JsonLcaf
from mesh.identity import KxTranscript, PeerIdentity, make_proof, parse_proof, verify_proof
from mesh.kx import KxAuthority

FRESHNESS = 60.0  # seconds a binding proof may be off the receiver's clock


def request_subject(rtr: str, uplink: str) -> bytes:
    return b"binding-request\x00" + rtr.encode() + b"\x00" + uplink.encode()


def reply_subject(rtr: str, uplink: str, endpoint: str) -> bytes:
    return b"binding-reply\x00" + "\x00".join((rtr, uplink, endpoint)).encode()


def sign(kx: KxAuthority, nonce: int, subject: bytes) -> JsonLcaf:
    issued = int(kx.clock() * 1000)
    return make_proof(kx.identity, KxTranscript("binding", nonce, 0, 1, subject, (), (), issued))


def verify(kx: KxAuthority, proof: object, nonce: int, subject: bytes) -> tuple[PeerIdentity, int]:
    """The signer and when it signed (Unix ms); IdentityError if the proof does not hold."""
    if not isinstance(proof, JsonLcaf):
        raise IdentityError("the binding carries no proof")
    issued = parse_proof(proof).issued_at_ms
    wall = kx.clock()
    if abs(wall - issued / 1000) > FRESHNESS:
        raise IdentityError(f"binding signed {wall - issued / 1000:.0f} s from now: replayed?")
    transcript = KxTranscript("binding", nonce, 0, 1, subject, (), (), issued)
    return verify_proof(kx.verifier, proof, transcript, wall), issued
