"""A tiny real guest for VM tests: Debian's kernel and a busybox initramfs, from Debian packages.

`guest(cache)` fetches `linux-image-<version>-amd64` with `apt-get download` (the package the
`linux-image-amd64` metapackage points at), takes the kernel and the virtio network modules out of
it, and builds an initramfs (busybox-static, the modules, an /init) with busybox's own cpio. The
/init reads the mesh settings our domain XML puts on the kernel command line (lispmesh.eid4=...,
see node/workloads/domain_xml.py), configures eth0 the way netattach.py configures a container,
prints `lispmesh-guest-ready` on the serial console and serves a TCP echo on port 7. Kept in
`cache` between runs (the download is ~70 MB).
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

from tests.oci_build import BUSYBOX

MODULES = ("virtio", "virtio_ring", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
           "virtio_pci", "failover", "net_failover", "virtio_net")  # fmt: skip
READY = "lispmesh-guest-ready"
INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for pass in 1 2 3; do  # in whatever order their symbols allow (there is no modules.dep)
  for m in {" ".join(MODULES)}; do insmod /lib/modules/$m.ko 2>/dev/null; done
done
for arg in $(cat /proc/cmdline); do
  case "$arg" in lispmesh.*=*) key=${{arg%%=*}}; eval "LM_${{key#lispmesh.}}=${{arg#*=}}";; esac
done
ip link set lo up
ip link set eth0 mtu "$LM_mtu" up
ip addr add "$LM_eid4/32" dev eth0
arp -i eth0 -s "$LM_gw4" "$LM_gwmac"  # busybox ip has no neigh add
ip route add default via "$LM_gw4" dev eth0 onlink
echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad  # busybox ip has no nodad
ip -6 addr add "$LM_eid6/128" dev eth0
ip -6 route add default via "$LM_gw6" dev eth0
nc -ll -p 7 -e /bin/cat &
echo {READY}
exec sleep 1000000
"""


def _kernel_package() -> str:
    out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    for line in out.splitlines():
        name = line.strip().removeprefix("Depends: ")
        if name.startswith("linux-image-") and name != "linux-image-amd64":
            return name
    raise RuntimeError("apt-cache: linux-image-amd64 depends on no kernel package")


def guest(cache: Path) -> tuple[Path, Path]:
    """(kernel, initramfs), built once into `cache`."""
    kernel, initrd = cache / "vmlinuz", cache / "initrd.cpio"
    if kernel.is_file() and initrd.is_file():
        return kernel, initrd
    cache.mkdir(parents=True, exist_ok=True)
    work = cache / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    package = _kernel_package()
    subprocess.run(["apt-get", "download", "-q", package], cwd=work, check=True,
                   capture_output=True)  # fmt: skip
    deb = next(work.glob("linux-image-*.deb"))
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True,
                         capture_output=True).stdout  # fmt: skip
    root = work / "initramfs"
    for sub in ("bin", "proc", "sys", "dev", "lib/modules"):
        (root / sub).mkdir(parents=True)
    import io

    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        for member in archive:
            base = member.name.rsplit("/", 1)[-1]
            if member.isfile() and "/boot/vmlinuz-" in member.name:
                kernel.with_suffix(".partial").write_bytes(archive.extractfile(member).read())  # type: ignore[union-attr]
            elif member.isfile() and base.removesuffix(".ko") in MODULES and base.endswith(".ko"):
                (root / "lib/modules" / base).write_bytes(archive.extractfile(member).read())  # type: ignore[union-attr]
    shutil.copy(BUSYBOX, root / "bin/busybox")
    (root / "init").write_text(INIT)
    (root / "init").chmod(0o755)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    cpio = subprocess.run([str(BUSYBOX), "cpio", "-o", "-H", "newc"], cwd=root, check=True,
                          input="\n".join(files).encode(), capture_output=True).stdout  # fmt: skip
    initrd.write_bytes(cpio)
    kernel.with_suffix(".partial").rename(kernel)
    shutil.rmtree(work)
    return kernel, initrd
