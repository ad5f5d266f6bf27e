"""The one base of every error a person can act on.

Each layer raises its own subclass (`netlab.NetlabError`, `mesh.control.ControlError`,
`node.state.StateError`, `controller_api.admin_client.AdminError`, ...) whose message is one line
saying what failed and where. The command line (`lispmesh.cli.main`) is the one place that turns
any of them into `lispmesh: error: <message>` and the exit code `code`; nothing below the command
line needs to know the command line exists.
"""

from __future__ import annotations


class LispmeshError(Exception):
    """A failure a person can act on: `str(error)` is one line, `code` the exit code (1)."""

    code: int = 1
