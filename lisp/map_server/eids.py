"""The IP addresses inside the addresses of control messages (EIDs, ITR-RLOCs, RLOCs)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

from lisp.address import Address, IpAddress
from lisp.lcaf import AfiList, InstanceId, SecurityKey

_MAX_ADDRESS_DEPTH = 4  # how deep to look into LCAFs for an IP (AFI-List, Security-Key)


def ip_of(address: Address, depth: int = 0) -> IpAddress | None:
    """The IP an address stands for: itself, or the one inside an AFI-List / Security-Key LCAF."""
    if isinstance(address, IPv4Address | IPv6Address):
        return address
    if depth >= _MAX_ADDRESS_DEPTH:
        return None
    if isinstance(address, SecurityKey):
        return ip_of(address.address, depth + 1)
    if isinstance(address, AfiList):
        for item in address.items:
            found = ip_of(item, depth + 1)
            if found is not None:
                return found
    return None


def ip_from_int(version: int, address: int) -> IpAddress:
    return IPv4Address(address) if version == 4 else IPv6Address(address)


def split_eid(eid: Address) -> tuple[int, IpAddress] | None:
    """(instance-id, IP) of an EID, plain or in an Instance-ID LCAF; None if not IP."""
    iid = 0
    if isinstance(eid, InstanceId):
        iid, eid = eid.iid, eid.address
    if isinstance(eid, IPv4Address | IPv6Address):
        return iid, eid
    return None


def make_eid(iid: int, version: int, net: int, as_lcaf: bool) -> Address:
    address = ip_from_int(version, net)
    return InstanceId(iid, address) if as_lcaf or iid else address


def parse_host(host: str) -> IpAddress | None:
    """The IP of a socket address's host part (a scope id dropped); None if it is not one."""
    try:
        return ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
