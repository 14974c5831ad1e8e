#!/usr/bin/env bash
# Builds the rescue live ISO (hybrid: BIOS and UEFI, CD or USB stick) in one command, as root:
#
#   bash iso-build/build.sh [OUTPUT.iso]        # default: iso-build/out/rescue-live.iso
#
# Steps: the project's wheel and its dependencies' wheels (pip, on this machine) → a Debian
# bookworm root (mmdebstrap, packages.txt, customize.sh with overlay/) → squashfs (zstd) →
# grub-mkrescue. Packages come from this machine's own apt sources.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
iso="$(realpath -m "${1:-$here/out/rescue-live.iso}")"
work="$here/out/work"

for tool in mmdebstrap mksquashfs grub-mkrescue xorriso mformat; do
    command -v "$tool" >/dev/null || {
        echo "build.sh: $tool is missing; install: mmdebstrap squashfs-tools xorriso" \
             "grub-pc-bin grub-efi-amd64-bin mtools" >&2
        exit 2
    }
done
[ "$(id -u)" = 0 ] || { echo "build.sh: run as root (mmdebstrap, chroot)" >&2; exit 2; }

# Bookworm sources of this machine's apt configuration: deb822 files whose Suites name
# bookworm, and one-line entries for bookworm suites.
host_sources() {
    local file
    for file in /etc/apt/sources.list.d/*.sources; do
        [ -f "$file" ] && grep -qE '^Suites:.*\bbookworm\b' "$file" && { cat "$file"; echo; }
    done
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$file" ] && grep -E '^deb\s.*\sbookworm(-[a-z]+)?\s' "$file"
    done
    return 0
}

start=$SECONDS
rm -rf "$work"
mkdir -p "$work/wheels" "$work/staging/live" "$work/staging/boot/grub" "$(dirname "$iso")"
trap 'rm -rf "$work"' EXIT

host_sources >"$work/sources"
case "$(head -c 64 "$work/sources")" in
    Types:*) mv "$work/sources" "$work/bookworm.sources"; sources="$work/bookworm.sources" ;;
    deb*) mv "$work/sources" "$work/bookworm.list"; sources="$work/bookworm.list" ;;
    *) echo "build.sh: no bookworm entry in this machine's apt sources" >&2; exit 2 ;;
esac

echo "== wheels (rescue and its dependencies)"
python3 -m pip wheel -q --disable-pip-version-check -w "$work/wheels" "$repo"

echo "== root file system (mmdebstrap)"
packages="$(grep -vE '^\s*(#|$)' "$here/packages.txt" | paste -sd, -)"
export ISO_BUILD_DIR="$here" WHEEL_DIR="$work/wheels"
# The hook is single-quoted on purpose: mmdebstrap's shell expands it, with $1 the new root.
# shellcheck disable=SC2016
mmdebstrap --quiet --variant=minbase --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --customize-hook='bash "$ISO_BUILD_DIR/customize.sh" "$1"' \
    bookworm "$work/root" "$sources"

echo "== kernel, initrd, squashfs"
newest() { printf '%s\n' "$@" | sort -V | tail -n1; }
cp "$(newest "$work"/root/boot/vmlinuz-*)" "$work/staging/live/vmlinuz"
cp "$(newest "$work"/root/boot/initrd.img-*)" "$work/staging/live/initrd.img"
# No xattrs: everything on the live system runs as root, so it needs no file capabilities, and
# the only other xattrs are the journal's ACLs, which systemd-tmpfiles restores at boot.
mksquashfs "$work/root" "$work/staging/live/filesystem.squashfs" -noappend -no-progress \
    -quiet -comp zstd -no-xattrs -wildcards -e 'boot/initrd.img*' 'boot/vmlinuz*' 'boot/System.map*'

echo "== ISO (grub-mkrescue: BIOS and UEFI, hybrid for USB sticks)"
cp "$here/grub.cfg" "$work/staging/boot/grub/grub.cfg"
grub-mkrescue --quiet -o "$iso" "$work/staging" -- -volid RESCUE_LIVE 2>"$work/xorriso.log" || {
    cat "$work/xorriso.log" >&2
    exit 1
}

size=$(stat -c %s "$iso")
echo "== built $iso: $((size / 1048576)) MiB in $((SECONDS - start)) s"
