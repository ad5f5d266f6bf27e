#!/usr/bin/env bash
# Installs everything lispmesh needs on a fresh Debian 12 machine (run as root), idempotently:
# Debian packages (only when one is missing), then a virtualenv in .venv with lispmesh in it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "bootstrap: run as root (network namespaces, TUN devices and apt need it)" >&2
  exit 1
fi

DEBS=(python3 python3-venv python3-dev gcc libssl-dev iproute2 nftables tshark tcpdump iperf3 graphviz
      procps iputils-ping tmux swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config
      umoci conntrack etcd-server etcd-client golang-github-containers-common libc6-dev
      runc busybox-static libvirt-dev libvirt-daemon libvirt-daemon-system libvirt-daemon-driver-qemu
      qemu-system-x86)
missing=()
for pkg in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer once so the install never blocks.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get -o DPkg::Lock::Timeout=600 update -q
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.lispmesh-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
