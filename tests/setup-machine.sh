#!/usr/bin/env bash
# Installs what rescue and its tests need on a Debian machine (run as root): the peer tools the
# tests use as judges, loop/FUSE helpers, what the boot test builds and boots a Debian disk with
# (mmdebstrap, GRUB, QEMU, OVMF), the file servers and clients the share tests image to (sshd
# and sshfs, Samba and smbnetfs), the mkfs of every file system the explore corpus holds, and
# the Python package with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
# The share tests start an sshd and a Samba server of their own on 127.0.0.1. Installing the
# packages would also start the system's servers on every address; those are stopped and
# disabled again below, unless they were here before.
servers=""
for package in openssh-server samba; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || servers="$servers $package"
done
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    gddrescue qemu-utils zstd b3sum e2fsprogs dosfstools mtools exfatprogs ntfs-3g fuse3 \
    smartmontools partclone parted fdisk gdisk util-linux mount tmux procps exfat-fuse python3-pip \
    qemu-system-common fatresize fusefat udpcast iproute2 xfsprogs btrfs-progs attr \
    openssh-server openssh-client sshfs samba smbclient smbnetfs \
    mmdebstrap qemu-system-x86 ovmf grub-efi-amd64-bin \
    >/dev/null
if [ -d /run/systemd/system ]; then
    units=""
    case "$servers" in *openssh-server*) units="$units ssh.service ssh.socket" ;; esac
    case "$servers" in *samba*) units="$units smbd.service nmbd.service samba-ad-dc.service" ;; esac
    for unit in $units; do
        systemctl disable --now --quiet "$unit" 2>/dev/null || true
    done
fi
# Debian's own python refuses pip installs outside a venv (PEP 668); a test machine takes them
export PIP_BREAK_SYSTEM_PACKAGES=1
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
# Users other than root mount through FUSE (`rescue mount` is tested as one): the kernel makes
# /dev/fuse 0666, but a container's /dev may keep it root's alone
chmod 0666 /dev/fuse
