"""Where the node agent takes its join token from, so the secret never sits on a command line.

Any local user can read every process's command line (/proc/PID/cmdline, `ps`), so a token given
with --token is visible to all of them until the node has joined. The agent therefore reads it
from a file only root can read (--token-file, refused when its group or others may read it), or
from the environment ($LISPMESH_TOKEN, which /proc shows only to the process's owner and root).
--token stays for a person typing `lispmesh node join` once, with a warning.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger("lispmesh.agent")

TOKEN_ENV = "LISPMESH_TOKEN"


class JoinSecretError(Exception):
    """The token file cannot be used (one line naming the file and why)."""


def read_token_file(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise JoinSecretError(f"{path}: cannot read the join token ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise JoinSecretError(f"{path}: the join token file is not a regular file")
        if info.st_mode & 0o077:
            raise JoinSecretError(
                f"{path}: the join token file is readable by others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); chmod 600 it"
            )
        if info.st_uid != os.geteuid():
            raise JoinSecretError(f"{path}: the join token file belongs to uid {info.st_uid}")
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise JoinSecretError(f"{path}: the join token file is not text") from None
    if not token or any(c.isspace() for c in token):
        raise JoinSecretError(f"{path}: the join token file must hold one token")
    return token


def join_token(
    flag: str | None, token_file: str | None, environ: Mapping[str, str] = os.environ
) -> str | None:
    """The token from --token-file, else $LISPMESH_TOKEN, else --token (with a warning)."""
    if token_file:
        if flag:
            raise JoinSecretError("give --token or --token-file, not both")
        return read_token_file(Path(token_file))
    if flag:
        log.warning(
            "--token puts the join secret on the command line, where every local user can read "
            "it; use --token-file or $%s",
            TOKEN_ENV,
        )
        return flag
    return environ.get(TOKEN_ENV) or None
