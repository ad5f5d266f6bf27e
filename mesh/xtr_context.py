"""What every part of an xTR reads and counts into: its config, clock, uplinks and counters.

The parts (mesh.paths, mesh.itr_resolve, mesh.rloc_probing, mesh.etr_answer, mesh.registrar,
mesh.revocation, mesh.peer_stats) each own their own state; this object holds only what is
common to all of them: the node's configuration as the xTR sees it, the time of the event being
handled (`now`, set by whoever feeds the xTR an event), the transport, the keys and the key
exchange (mesh.key_exchange), the local uplinks, and the drop/stat/error counters status reports.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

from lisp import InstanceId
from lisp.address import Address
from lisp.rloc_probe import RlocProber
from mesh.config import IpAddress, NodeConfig, RtrRef
from mesh.datapath import DataPath, PythonDataPath
from mesh.key_exchange import KeyExchange, KxRefused
from mesh.keys import EncapState, KeyStore, plain_encap
from mesh.kx import KxAuthority
from mesh.pmtu import PathMtuTable
from mesh.xtr_types import LocalRloc, Transport

log = logging.getLogger("lispmesh.xtr")
RTR_PRIORITY = 254
PLAINTEXT_RLOCS_LIMIT = 4096


class XtrContext:
    def __init__(
        self,
        config: NodeConfig,
        transport: Transport,
        kx: KxAuthority | None,
        now: float,
        link_state: Callable[[str], bool] | None = None,
    ) -> None:
        assert config.xtr is not None
        self.now = now
        self.transport = transport
        self.link_state = link_state
        self.encrypt = config.security.encryption
        self.locals = [
            LocalRloc(r.address, r.interface, r.priority, r.weight) for r in config.xtr.rlocs
        ]
        self.locals.sort(key=lambda r: (r.priority, -r.weight))
        self.keys = KeyStore(
            cipher_suite=config.security.cipher_suite,
            instance_id=config.xtr.instance_id,
            rekey_after_seconds=config.security.rekey_after_seconds,
            rekey_after_packets=config.security.rekey_after_packets,
            interop=not config.security.authenticate_key_exchange,
        )
        self.keys.start(now)
        # Every decision about a peer's key (mesh.key_exchange), signing with `kx`.
        self.exchange = KeyExchange(self.keys, kx)
        self.prober = RlocProber(
            config.xtr.timers.probe_interval,
            config.xtr.timers.probe_dead_after,
            config.xtr.timers.probe_idle_interval,
        )
        # RLOCs whose data packets the Python data path opened since the last tick: proof they
        # are alive (the C engine counts its own; see Xtr.tick).
        self.heard_from: set[str] = set()
        self.drops: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        # Path MTU per remote RLOC; `route_mtu` (set by the runtime) reads the kernel's route
        # MTU from a local uplink towards an RLOC (None: not known).
        self.pmtu = PathMtuTable(
            probe_timeout=max(1.0, 2 * config.xtr.timers.probe_interval),
            probing=config.xtr.mtu_probes,
            counters=self.stats,
        )
        self.route_mtu: Callable[[LocalRloc, str], int | None] | None = None
        self.errors: deque[str] = deque(maxlen=20)
        # Where packets are carried (mesh.datapath): the Python reference until the runtime
        # attaches the C engine.
        self.datapath: DataPath = PythonDataPath(transport, now)
        # The RTR this node is reached through while an uplink is behind a NAT (mesh.rtr_client
        # sets it once the RTR confirmed our binding); None: reached directly.
        self.via_rtr: RtrRef | None = None
        # Every RTR that holds our binding now (via_rtr first): all are registered, so a peer
        # whose RTR dies moves to the next by its own probing (mesh.rtr_client).
        self.rtrs_up: tuple[RtrRef, ...] = ()
        self.plaintext_rlocs: set[str] = set()
        self.via_seen: IpAddress | None = None  # the NAT's outside address, as that RTR saw it
        # security.lispers_peers (mesh.lispers_peer): the states sealing for them, by
        # (our ITR public key, their ETR public key).
        self.lispers_peers = config.security.lispers_peers
        self.lispers_encap: dict[tuple[bytes, bytes], EncapState] = {}
        self.configure(config, kx)
        if self.lispers_peers:
            log.warning(
                "lispers.net profile for RLOCs %s: unauthenticated key exchange, no replay "
                "protection, Python data path",
                ", ".join(map(str, self.lispers_peers)),
            )
        if self.fallback_encap is not None:
            log.warning("plaintext_fallback is ON: peers answering without a key get plaintext")

    def configure(self, config: NodeConfig, kx: KxAuthority | None) -> None:
        """Take the parts of a new config every component reads (the xTR checks the rest)."""
        assert config.xtr is not None
        self.config = config
        self.xcfg = config.xtr
        self.timers = config.xtr.timers
        # The mesh's RTRs by RLOC text (a peer RLOC that is one is a relay, mesh.rtr).
        self.rtrs = {str(r.address): r for r in config.xtr.rtrs}
        self.iid = config.xtr.instance_id
        # What an opened packet may be addressed to: (version, network, mask) per EID prefix.
        # It must cover every prefix we register (mesh.registrar) and answer (mesh.etr_answer).
        self.local_eids = tuple(
            (p.version, int(p.network_address), int(p.netmask)) for p in self.xcfg.eid_prefixes
        )
        self.exchange.authority = kx
        # With encryption off (an explicit opt-in, logged by the runtime), every path seals
        # with this one plaintext state; with it on, there is none and no path is plaintext.
        self.plain_encap: EncapState | None = (
            None if self.encrypt else plain_encap(self.iid, self.now)
        )
        # security.plaintext_fallback: the state for peers that answered without a key, and
        # the RLOCs whose plaintext we take because of it (mesh.itr_resolve, mesh.etr_answer).
        self.fallback_encap: EncapState | None = (
            plain_encap(self.iid, self.now)
            if self.encrypt and config.security.plaintext_fallback
            else None
        )
        self.keys.instance_id = self.iid
        self.keys.rekey_after_seconds = config.security.rekey_after_seconds
        self.keys.rekey_after_packets = config.security.rekey_after_packets
        self.prober.interval = self.timers.probe_interval
        self.prober.dead_after = self.timers.probe_dead_after
        self.prober.idle_interval = self.timers.probe_idle_interval

    @property
    def kx(self) -> KxAuthority | None:
        """The key exchange's authority (None: the unauthenticated interop mode)."""
        return self.exchange.authority

    @kx.setter
    def kx(self, authority: KxAuthority | None) -> None:
        self.exchange.authority = authority

    def refused(self, what: str, refusal: KxRefused) -> None:
        """Count and log a key exchange the state machine refused; `what` says which."""
        self.drops[refusal.drop] += 1
        self.error(f"{what} refused: {refusal.reason}")

    def allow_plaintext_from(self, rlocs: list[str]) -> None:
        """security.plaintext_fallback: take KK = 0 packets from these RLOCs (bounded)."""
        if len(self.plaintext_rlocs) + len(rlocs) > PLAINTEXT_RLOCS_LIMIT:
            self.plaintext_rlocs.clear()
        self.plaintext_rlocs.update(rlocs)

    def error(self, message: str) -> None:
        log.warning("%s", message)
        self.errors.append(message)

    def our_eid(self, version: int) -> IpAddress:
        for address in self.xcfg.eid_addresses:
            if address.version == version:
                return address
        return IPv4Address(0) if version == 4 else IPv6Address(0)

    def eid_address(self, address: IpAddress) -> Address:
        return InstanceId(self.iid, address) if self.iid else address

    def local_for(self, version: int) -> LocalRloc | None:
        """Our best uplink that is up for an RLOC of this IP version."""
        for local in self.locals:
            if local.up and local.address.version == version:
                return local
        return None

    def up_rloc_addresses(self, fallback: LocalRloc) -> tuple[Address, ...]:
        """The addresses of our uplinks that are up (or `fallback`'s), as ITR-RLOCs; behind a
        NAT our RTRs first (answers to us go through the first) and the NAT's outside address
        last (the key exchange's proof names the same set as signed_rlocs)."""
        rtr = tuple(r.address for r in self._rtrs())
        own = tuple(r.address for r in self.locals if r.up) or (fallback.address,)
        return rtr + own + self._nat_outside()

    def _nat_outside(self) -> tuple[IpAddress, ...]:
        """Behind a NAT: its outside address as our RTR saw it. Our probes and answers leave
        through the NAT from it, so peers know it as ours (mesh.etr_answer answers only known
        requesters' unsigned probes)."""
        seen = self.via_seen
        if self.via_rtr is None or seen is None or any(r.address == seen for r in self.locals):
            return ()
        return (seen,)

    def advertised_rlocs(self) -> list[tuple[IpAddress, int, int, bool]]:
        """(address, priority, weight, reachable) of the RLOC set we register and answer with.
        Behind a NAT our own addresses (and the NAT's) are listed unreachable (no one outside
        can send to them) and the RTR follows with priority 254, weight 0 (lispers.net's
        convention for RTR RLOCs)."""
        behind = self.via_rtr is not None
        rlocs = [(r.address, r.priority, r.weight, r.up and not behind) for r in self.locals]
        rlocs += [(a, RTR_PRIORITY, 0, False) for a in self._nat_outside()]
        if self.via_rtr is not None:
            rlocs += [(r.address, RTR_PRIORITY, 0, True) for r in self._rtrs()]
        return rlocs

    def signed_rlocs(self) -> tuple[IpAddress, ...]:
        """The RLOCs our key-exchange proofs name: our uplinks, the NAT's outside address and
        the RTR we are reached by."""
        rtrs = tuple(r.address for r in self._rtrs())
        return tuple(r.address for r in self.locals) + self._nat_outside() + rtrs

    def _rtrs(self) -> list[RtrRef]:
        """The RTRs we are reached through: the one we send through first, then the others
        that hold our binding."""
        if self.via_rtr is None:
            return []
        return [self.via_rtr, *(r for r in self.rtrs_up if r != self.via_rtr)]
