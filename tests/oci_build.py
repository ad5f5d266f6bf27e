"""The layout writer the tests build their images with (it lives in node/workloads so that the
demo can use it too)."""

from node.workloads.layout_writer import (
    APPLETS,
    BUSYBOX,
    Entry,
    blob_path,
    busybox_layer,
    digest,
    layer,
    put_blob,
    tar_layout,
    write_layout,
)

__all__ = [
    "APPLETS",
    "BUSYBOX",
    "Entry",
    "blob_path",
    "busybox_layer",
    "digest",
    "layer",
    "put_blob",
    "tar_layout",
    "write_layout",
]
