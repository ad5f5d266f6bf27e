"""Lab identities for tests and benches: a CA and node certificates written to directories."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import ip_network
from pathlib import Path

from certs.files import CA_CERT_FILE, CA_KEY_FILE, NODE_CERT_FILE, write_certificate
from certs.format import IpNetwork, check_name
from controller_api.ca import CertificateAuthority
from mesh.identity import NodeIdentity


def provision_lab_identities(
    out_dir: Path | str,
    ca_name: str,
    nodes: Mapping[str, Sequence[tuple[int, str | IpNetwork]]],
    valid_days: int = 365,
) -> dict[str, Path]:
    """A CA in `out_dir/ca/` (created once, reused after) and, per node, `out_dir/<name>/` with
    node.key (kept if present), a freshly issued node.crt and ca.crt. Returns the node dirs."""
    out = Path(out_dir)
    ca_dir = out / "ca"
    if (ca_dir / CA_KEY_FILE).exists():
        ca = CertificateAuthority.load(ca_dir)
    else:
        ca = CertificateAuthority.create(ca_dir, ca_name)
    dirs: dict[str, Path] = {}
    for name, eid_specs in nodes.items():
        node_dir = out / check_name(name)
        eids = [(int(iid), ip_network(prefix)) for iid, prefix in eid_specs]
        (node_dir / NODE_CERT_FILE).unlink(missing_ok=True)  # reissued below, for this key
        node = NodeIdentity.load_or_create(node_dir, name)
        node.install_certificate(ca.issue(name, node.public_key, eids, valid_days=valid_days))
        write_certificate(node_dir / CA_CERT_FILE, ca.certificate)
        dirs[name] = node_dir
    return dirs
