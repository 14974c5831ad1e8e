#!/usr/bin/env bash
# mmdebstrap customize hook: turns the fresh bookworm root ($1) into the rescue live system.
# Needs ISO_BUILD_DIR (this folder) and WHEEL_DIR (rescue's wheel and its dependencies').
set -euo pipefail
root="$1"

# rescue in its own venv, from local wheels only: the live system never reaches an index.
mkdir -p "$root/tmp/wheels"
cp "$WHEEL_DIR"/*.whl "$root/tmp/wheels/"
chroot "$root" python3 -m venv /opt/rescue
chroot "$root" /opt/rescue/bin/pip install --quiet --no-index --disable-pip-version-check \
    --find-links /tmp/wheels rescue
rm -rf "$root/tmp/wheels"
ln -sf /opt/rescue/bin/rescue "$root/usr/local/bin/rescue"

# Autologin on tty1 and ttyS0, networking, the SSH switch and quiet consoles.
cp -a "$ISO_BUILD_DIR/overlay/." "$root/"
chmod 0755 "$root"/usr/local/sbin/*
chroot "$root" systemctl enable --quiet systemd-networkd.service rescue-ssh-boot.service
chroot "$root" systemctl disable --quiet systemd-networkd-wait-online.service ssh.service
# Each boot makes its own host keys and machine id; none may ship inside the ISO.
rm -f "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
# live-boot's initramfs writes a loopback stanza to /etc/network/interfaces; give it a folder
# (no ifupdown here: systemd-networkd does the network).
mkdir -p "$root/etc/network"
# Root has no password (autologin on the consoles); SSH needs one set or a key.
chroot "$root" passwd --quiet --lock root

# Smaller image: package lists and caches are rebuilt by `apt update` when needed.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
find "$root/var/log" -type f -delete
