#!/usr/bin/env bash
# Installs what rescue and its tests need on a Debian machine (run as root): the peer tools the
# tests use as judges, loop/FUSE helpers, what the boot test builds and boots a Debian disk with
# (mmdebstrap, GRUB, QEMU, OVMF), and the Python package with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    gddrescue qemu-utils zstd b3sum e2fsprogs dosfstools mtools exfatprogs ntfs-3g fuse3 \
    smartmontools partclone fdisk gdisk util-linux mount tmux procps exfat-fuse python3-pip \
    udpcast iproute2 \
    qemu-system-common \
    mmdebstrap qemu-system-x86 ovmf grub-efi-amd64-bin \
    >/dev/null
# Debian's own python refuses pip installs outside a venv (PEP 668); a test machine takes them
export PIP_BREAK_SYSTEM_PACKAGES=1
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
