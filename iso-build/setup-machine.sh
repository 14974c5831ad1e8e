#!/usr/bin/env bash
# Installs what building (build.sh) and boot-testing (boot_test.py) the live ISO need on a
# Debian bookworm machine, as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    mmdebstrap squashfs-tools xorriso grub-common grub-pc-bin grub-efi-amd64-bin mtools \
    dosfstools e2fsprogs gdisk fdisk qemu-system-x86 ovmf openssh-client \
    openssh-server netcat-openbsd >/dev/null
