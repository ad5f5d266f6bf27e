"""The libvirt domain XML for a VM workload (pure: files and facts in, XML text out).

A VM boots from its disk, or directly from a kernel and initramfs with our command line plus
what the guest needs to join the mesh (`lispmesh.eid4=`, `lispmesh.eid6=`, the gateway and its
MAC: the guest's init sets them up, as netattach.py does inside a container). Its NIC is the tap
the node made (`type='ethernet'`, `managed='no'`: libvirt neither creates nor bridges it), with
the mesh MTU. ACPI is on so the power button shuts it down; a poweroff or crash leaves it off
(the agent owns restarts), and the serial console goes to a file for `logs`.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from node.workloads.runtime import GATEWAY4, GATEWAY6, Workload

CPU_PERIOD = 100_000  # microseconds


@dataclass(frozen=True)
class VmFiles:
    console: Path
    disk: Path | None = None
    disk_format: str = "qcow2"  # or raw
    kernel: Path | None = None
    initrd: Path | None = None


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def kernel_cmdline(workload: Workload, gateway_mac: str) -> str:
    parts = [workload.spec.kernel_cmdline] if workload.spec.kernel_cmdline else []
    attachment = workload.attachment
    if attachment is not None:
        if attachment.eid4 is not None:
            parts.append(f"lispmesh.eid4={attachment.eid4} lispmesh.gw4={GATEWAY4}")
        if attachment.eid6 is not None:
            parts.append(f"lispmesh.eid6={attachment.eid6} lispmesh.gw6={GATEWAY6}")
        if gateway_mac:
            parts.append(f"lispmesh.gwmac={gateway_mac}")
        parts.append(f"lispmesh.mtu={attachment.mtu}")
    return " ".join(parts)


def domain_xml(
    workload: Workload, domain_id: str, files: VmFiles, domain_type: str, gateway_mac: str = ""
) -> str:
    spec = workload.spec
    domain = ET.Element("domain", type=domain_type)
    _sub(domain, "name", domain_id)
    _sub(domain, "memory", str(spec.resources.memory // 1024), unit="KiB")
    vcpus = max(1, math.ceil(spec.resources.cpus))
    _sub(domain, "vcpu", str(vcpus), placement="static")
    if spec.resources.cpus < vcpus:  # a fraction of a CPU: a quota per vCPU
        tune = _sub(domain, "cputune")
        _sub(tune, "period", str(CPU_PERIOD))
        _sub(tune, "quota", str(int(spec.resources.cpus / vcpus * CPU_PERIOD)))
    os_ = _sub(domain, "os")
    _sub(os_, "type", "hvm", arch="x86_64")
    if files.kernel is not None:
        _sub(os_, "kernel", str(files.kernel))
        if files.initrd is not None:
            _sub(os_, "initrd", str(files.initrd))
        _sub(os_, "cmdline", kernel_cmdline(workload, gateway_mac))
    else:
        _sub(os_, "boot", dev="hd")
    _sub(_sub(domain, "features"), "acpi")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")
    devices = _sub(domain, "devices")
    if files.disk is not None:
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type=files.disk_format)
        _sub(disk, "source", file=str(files.disk))
        _sub(disk, "target", dev="vda", bus="virtio")
    if workload.attachment is not None:
        nic = _sub(devices, "interface", type="ethernet")
        _sub(nic, "target", dev=workload.attachment.host_if, managed="no")
        _sub(nic, "model", type="virtio")
        _sub(nic, "mtu", size=str(workload.attachment.mtu))
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=str(files.console), append="on")
    _sub(serial, "target", port="0")
    _sub(devices, "memballoon", model="none")
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode")
