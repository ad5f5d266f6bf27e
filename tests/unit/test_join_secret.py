"""The join token needs no command line: a 0600 file or the environment (node/join_secret)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.join_secret import JoinSecretError, join_token, read_token_file

TOKEN = "lmj1.0123456789ab.s3cret.pin"


def _file(tmp_path: Path, mode: int, text: str = TOKEN + "\n") -> Path:
    path = tmp_path / "join-token"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_root_only_file_gives_the_token(tmp_path: Path) -> None:
    assert read_token_file(_file(tmp_path, 0o600)) == TOKEN
    assert join_token(None, str(_file(tmp_path, 0o400)), {}) == TOKEN


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    with pytest.raises(JoinSecretError, match=f"readable by others \\(mode {mode:04o}\\)"):
        read_token_file(_file(tmp_path, mode))


def test_a_symlink_or_a_directory_or_garbage_is_one_error(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(_file(tmp_path, 0o600))
    with pytest.raises(JoinSecretError, match="link: cannot read the join token"):
        read_token_file(link)
    with pytest.raises(JoinSecretError, match="not a regular file"):
        read_token_file(tmp_path)
    with pytest.raises(JoinSecretError, match="must hold one token"):
        read_token_file(_file(tmp_path, 0o600, "a b\n"))
    with pytest.raises(JoinSecretError, match="must hold one token"):
        read_token_file(_file(tmp_path, 0o600, "\n"))
    bad = tmp_path / "bin"
    bad.write_bytes(b"\xff\xfe")
    bad.chmod(0o600)
    with pytest.raises(JoinSecretError, match="not text"):
        read_token_file(bad)
    with pytest.raises(JoinSecretError, match="missing: cannot read"):
        read_token_file(tmp_path / "missing")


def test_sources_in_order(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = {"LISPMESH_TOKEN": "from-env"}
    assert join_token(None, None, env) == "from-env"
    assert join_token(None, None, {}) is None
    assert join_token(None, str(_file(tmp_path, 0o600)), env) == TOKEN
    with pytest.raises(JoinSecretError, match="not both"):
        join_token("x", str(_file(tmp_path, 0o600)), env)
    assert join_token("typed", None, env) == "typed"  # a person typing it once
    assert "every local user can read it" in caplog.text and "typed" not in caplog.text


def test_the_file_belongs_to_us(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file away")  # CI runs as root
    path = _file(tmp_path, 0o600)
    os.chown(path, 65534, -1)
    with pytest.raises(JoinSecretError, match="belongs to uid 65534"):
        read_token_file(path)
