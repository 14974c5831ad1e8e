#!/usr/bin/env bash
# Installs what building (build.sh) and boot-testing (boot_test.py) the live ISO need on a
# Debian bookworm machine, as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# The boot test runs an sshd of its own on 127.0.0.1 (the share the live system images into);
# the system's sshd that installing openssh-server starts is stopped again if it is new here.
new_sshd=true
dpkg-query -W -f='${Status}' openssh-server 2>/dev/null | grep -q "install ok installed" \
    && new_sshd=false
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    mmdebstrap squashfs-tools xorriso grub-common grub-pc-bin grub-efi-amd64-bin mtools \
    dosfstools e2fsprogs gdisk fdisk qemu-system-x86 ovmf openssh-client \
    openssh-server netcat-openbsd >/dev/null
if $new_sshd && [ -d /run/systemd/system ]; then
    systemctl disable --now --quiet ssh.service 2>/dev/null || true
    systemctl disable --now --quiet ssh.socket 2>/dev/null || true
fi
