"""The two ways lisp/ can fail: bad bytes in (DecodeError), bad values out (EncodeError)."""

from __future__ import annotations


class DecodeError(ValueError):
    """The bytes are not a valid LISP message. The only exception any decoder raises."""


class EncodeError(ValueError):
    """A value cannot be put on the wire (out of range, inconsistent flags). Strict on send."""
