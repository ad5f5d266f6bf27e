"""Workload benchmark (issue 13): image import against `sha256sum`, and run -> answering on EID.

Run as root from the repository root: `python3 bench/workloads_bench.py [--mb 100]`. Printed side
by side in one run, never asserted:

* import of a layout holding one layer of MB megabytes (random, so gzip cannot shrink it) into a
  blob store (hash while copying, then verified again before unpack), next to `sha256sum` over the
  same blob file, and the unpack of that layer into a rootfs;
* a busybox container under runc: from `prepare` to its TCP echo answering on its EID from the
  node's namespace (needs runc and busybox-static; skipped otherwise).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from ipaddress import ip_address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.workloads.layers import unpack
from node.workloads.oci_image import load_image
from node.workloads.oci_store import BlobStore
from node.workloads.package import workload_spec
from tests.oci_build import BUSYBOX, Entry, busybox_layer, layer, write_layout


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def import_speed(work: Path, megabytes: int) -> None:
    data = os.urandom(megabytes << 20)
    write_layout(work / "big", [layer([Entry("blob", data=data)])])
    biggest = max((work / "big/blobs/sha256").iterdir(), key=lambda p: p.stat().st_size)
    size = biggest.stat().st_size / (1 << 20)
    sha = _timed(lambda: subprocess.run(["sha256sum", str(biggest)], check=True,
                                        capture_output=True))  # fmt: skip
    store = BlobStore(work / "store")
    imported = _timed(lambda: store.import_layout(work / "big"))
    image = load_image(store, store.import_layout(work / "big"))
    unpacked = _timed(lambda: unpack(store, image, work / "rootfs"))
    print(f"import {size:.0f} MB layout: {size / imported:7.0f} MB/s  "
          f"(sha256sum of the same blob: {size / sha:7.0f} MB/s; unpack: {size / unpacked:5.0f} "
          f"MB/s incl. re-verify + gunzip)")  # fmt: skip


def container_start(work: Path) -> None:
    if os.geteuid() != 0 or shutil.which("runc") is None or not BUSYBOX.exists():
        print("container run -> answering: skipped (needs root, runc, busybox-static)")
        return
    from node.workloads.runc import RuncRuntime
    from node.workloads.runtime import Attachment, Workload

    tag = secrets.token_hex(3)
    netns = f"lmbench-{tag}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    subprocess.run(["ip", "-n", netns, "addr", "add", "10.94.0.1/32", "dev", "lo"], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    config = {"Cmd": ["/bin/nc", "-ll", "-p", "7", "-e", "/bin/cat"]}
    write_layout(work / "echo", [busybox_layer()], config=config)
    store = BlobStore(work / "store")
    image = load_image(store, store.import_layout(work / "echo"))
    runtime = RuncRuntime(work / "c", work / "runc", f"lmb{tag}-", node_netns=netns)
    workload = Workload("echo", image, workload_spec(image),
                        Attachment(f"lmb{tag}e", ip_address("10.94.0.5")))  # fmt: skip
    try:
        start = time.perf_counter()
        runtime.prepare(store, workload)
        runtime.define(workload)
        runtime.start("echo")
        deadline = start + 30
        while time.perf_counter() < deadline:
            probe = subprocess.run(["ip", "netns", "exec", netns, "sh", "-c",
                                    "echo x | busybox nc -w 1 10.94.0.5 7"],
                                   capture_output=True, text=True)  # fmt: skip
            if probe.stdout == "x\n":
                break
        print(f"container run -> answering on its EID: {time.perf_counter() - start:.2f} s")
    finally:
        for name in runtime.names():
            runtime.destroy(name)
            runtime.delete(name)
        subprocess.run(["ip", "netns", "del", netns], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lispmesh-wlbench-"))
    try:
        import_speed(work, args.mb)
        container_start(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
