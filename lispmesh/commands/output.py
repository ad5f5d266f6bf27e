"""Output shared by every verb: JSON for scripts, a console for people, files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lispmesh.errors import CliError

if TYPE_CHECKING:
    from rich.console import Console


def console() -> Console:
    """Wide enough for the tables when piped; the terminal's width when interactive. No emoji
    codes: an IPv6 address such as fd00:1234:5678::1 holds one (`:1234:`). Rich is imported
    here, not above: `lispmesh node run` prints no table and starts faster without it."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160, emoji=False)


def as_data(doc: Any) -> Any:
    """A protobuf message as plain data (every field, proto names); anything else unchanged."""
    if not hasattr(doc, "DESCRIPTOR"):
        return doc
    from google.protobuf import json_format

    return json_format.MessageToDict(
        doc, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def print_json(doc: Any) -> None:
    print(json.dumps(as_data(doc), indent=2, sort_keys=True, default=str))


def write_text(path: str | None, text: str, announce: bool = False) -> None:
    """`text` into `path` (stdout for None or `-`); `announce` says `wrote PATH` on stderr."""
    if path is None or path == "-":
        sys.stdout.write(text)
        return
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None
    if announce:
        print(f"wrote {path}", file=sys.stderr)
