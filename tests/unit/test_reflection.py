"""No reflection off an ETR (issue 12, LOW): a direct Map-Request without a signed key is answered
to its UDP source, which anyone can forge. An attacker sends small requests "from" a victim's
address and the ETR would fire its Map-Replies at the victim. An authenticating ETR answers such
requests only from peers it holds keys from or sends to (their keyless RLOC-probes); everyone
else must offer a signed key, whose proof names the RLOCs it may be answered at."""

from __future__ import annotations

from ipaddress import ip_address

from lisp import MapRequest, RequestRecord
from mesh.xtr import CONTROL_PORT
from tests.unit import test_xtr_memory as memory
from tests.unit.test_xtr_memory import MakeNode, Wire, ipv4_packet, joined, rloc

mesh = memory.mesh
pki = memory.pki
VICTIM = "10.77.0.200"


def _keyless_request(nonce: int) -> bytes:
    record = RequestRecord(ip_address("10.1.2.0"), 24)  # n2's prefix
    return MapRequest(
        nonce=nonce, itr_rlocs=(ip_address(VICTIM),), records=(record,), probe=True
    ).encode()


def test_a_forged_direct_request_is_not_reflected_at_its_source(
    mesh: tuple[Wire, MakeNode],
) -> None:
    wire, _ = mesh
    n1, n2 = joined(mesh, 1, 2)
    n1.xtr.inside_packet(ipv4_packet("10.1.1.1", "10.1.2.1"))  # n1 and n2 exchange keys
    wire.pump()
    replies = n2.xtr.ctx.stats["map-replies-sent"]
    # A keyless probe from a peer n2 holds a key from is answered, as RLOC probing needs.
    (entry,) = n1.xtr.path_table.map_cache
    assert n1.xtr.prober.send_probe(entry, rloc(2), with_key=False) is not None
    wire.pump()
    assert n2.xtr.ctx.stats["map-replies-sent"] == replies + 1
    # The attack: requests "from" the victim, who never asked.
    for nonce in range(1, 11):
        wire.queue.append(
            ((VICTIM, CONTROL_PORT), (rloc(2), CONTROL_PORT), _keyless_request(nonce))
        )
    wire.pump()
    assert wire.to(VICTIM, CONTROL_PORT) == []
    assert n2.xtr.ctx.drops["map-request-unknown-requester"] == 10
    assert n2.xtr.ctx.stats["map-replies-sent"] == replies + 1
