"""Kinds `lispmesh-node` and `lispmesh-controller`: a namespace running the lispmesh process.

The command defaults to `lispmesh node run --config <startup-config>` (resp. `lispmesh
controller serve ...`); a node's `cmd` replaces it (tests use `sleep 600` until the node binary
exists). Output goes to clab-<lab>/<node>/stdout.log and stderr.log; destroy stops it.
"""

from __future__ import annotations

from netlab.kinds.linux import LinuxKind


class LispmeshNodeKind(LinuxKind):
    name = "lispmesh-node"


class LispmeshControllerKind(LinuxKind):
    name = "lispmesh-controller"
