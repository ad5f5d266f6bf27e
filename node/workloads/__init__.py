"""Workloads on a node (issue 13): edge containers — containers and VMs shipped as OCI image
layouts — run through one runtime interface with one lifecycle.

oci_store   content-addressed blob store; import of a layout directory or tarball, every blob
            verified by sha256 before it is kept
oci_image   the manifest and config of an imported image (container or VM)
package     our manifest annotations (resources, ports, env, cmd, labels) -> a workload spec
layers      unpack container layers into a rootfs: whiteouts, opaque dirs, nothing escapes
"""
