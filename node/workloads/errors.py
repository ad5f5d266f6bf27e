"""The errors of the workload layer: one line each, saying what and where."""

from __future__ import annotations

from common.errors import LispmeshError


class WorkloadError(LispmeshError):
    """A workload could not be imported, defined, started or stopped (one line for the operator)."""


class ImageError(WorkloadError):
    """An image is malformed, tampered with or unsafe; it never runs."""
