"""Map-server and map-resolver (RFC 9301 §8.2-8.4), co-located, sans-IO.

Bytes and `now` (monotonic seconds, passed in; nothing here reads a clock) go in, `SendTo` and
`Log` actions come out. One idea per module:

- `site`: the configuration (`Site`), the actions (`SendTo`, `Log`) and refusals;
- `prefixes`: longest-prefix tables and the prefix sets behind negative replies;
- `eids`: the IP addresses inside message addresses;
- `registry`: the allowances and the registrations, their expiry and paging (`Registry`);
- `register`: Map-Register in, Map-Notify out (`Registrar`: authentication, nonces, lifetimes);
- `resolve`: Map-Requests answered, forwarded or refused (`Resolver`);
- `info_reply`: Info-Requests answered with what the map-server sees (`InfoResponder`);
- `server`: `MapServer`, these composed behind one `handle`;
- `service`: `MapServerService`, the core on the asyncio loop of a node or the controller
  (expiry task, rate-limited logs; sockets stay with whoever owns them).
"""

from lisp.map_server.eids import ip_of
from lisp.map_server.prefixes import least_specific_hole
from lisp.map_server.registry import Registration
from lisp.map_server.server import MapServer
from lisp.map_server.site import Log, MsAction, PolicyCheck, Prefix, SendTo, Site

__all__ = [
    "Log",
    "MapServer",
    "MsAction",
    "PolicyCheck",
    "Prefix",
    "Registration",
    "SendTo",
    "Site",
    "ip_of",
    "least_specific_hole",
]
