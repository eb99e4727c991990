#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Builds the custom arm64 guest kernel: Debian's linux-source-6.1 (the same 6.1 as the stock
# guest), `allnoconfig` plus qemu/kernel/guest.config, the project's patches in
# qemu/kernel/patches/ (applied in name order), `make Image`. No modules.
#
# Cache: ${SMMU_HYPD_KERNEL_CACHE:-${SMMU_HYPD_CACHE:-~/.cache/smmu-hypd}/kernel}, stamped by the
# contents of this script, the fragment and the patches. It keeps the source tree and the object
# tree (O=), so a changed patch is reverted and re-applied alone and only what it touches is
# recompiled (a patch to a widely included header still rebuilds most of the kernel). Safe when
# several processes run it at once: everything after the lock is taken runs one at a time, and
# each stamp's Image has its own path, so a guest booting an older Image is not overwritten.
# First build: ~6 min on 2 idle cores, ~10 min when they are shared. Cached: < 0.1 s.
# Prints the Image's path on the last line of stdout.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${SMMU_HYPD_KERNEL_CACHE:-${SMMU_HYPD_CACHE:-$HOME/.cache/smmu-hypd}/kernel}
FRAGMENT="$HERE/kernel/guest.config"
PATCHES=$(ls "$HERE"/kernel/patches/*.patch 2>/dev/null | sort || true)
SRC_PKG=linux-source-6.1
MAKE_ARGS=(ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-)
log() { echo "build-kernel: $*" >&2; }

mkdir -p "$CACHE"
# shellcheck disable=SC2086
want=$(cat "$0" "$FRAGMENT" $PATCHES | sha256sum | cut -c1-16)   # contents only, not paths
IMAGE="$CACHE/Image-$want"

exec 9>"$CACHE/lock"
flock 9      # one builder at a time; a second caller waits, then finds the stamp current
if [ -f "$IMAGE" ]; then echo "$IMAGE"; exit 0; fi

# Tools: the cross compiler and what kbuild runs on the host.
missing=()
for p in gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu build-essential flex bison bc xz-utils patch; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi

cd "$CACHE"
SRC="$CACHE/src/$SRC_PKG"
APPLIED="$CACHE/applied"    # copies of the patches the tree carries now, in order
BUILD="$CACHE/build"

# Files a set of patches changes (the "+++ b/path" lines).
patched_files() { [ $# -eq 0 ] || sed -n 's|^+++ b/\([^[:space:]]*\).*|\1|p' "$@" | sort -u; }

if [ ! -f "$SRC/Makefile" ]; then
    if ! ls "$SRC_PKG"_*_all.deb >/dev/null 2>&1; then
        log "downloading $SRC_PKG (~140 MB)"
        apt-get download -qq "$SRC_PKG" >/dev/null 2>&1 || { apt-get update -qq && apt-get download -qq "$SRC_PKG" >/dev/null; }
    fi
    deb=$(ls "$SRC_PKG"_*_all.deb | sort -V | tail -n1)
    log "unpacking $deb"
    rm -rf "$CACHE/src"; mkdir -p "$CACHE/src"
    dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/src/$SRC_PKG.tar.xz" | tar -xJ -C "$CACHE/src"
    # The tarball's files carry old mtimes: whatever earlier patches changed must look newer than
    # its objects, or make would keep objects built from patched sources.
    # shellcheck disable=SC2046
    old=$(patched_files $(ls "$APPLIED"/*.patch 2>/dev/null || true))
    for f in $old; do [ ! -f "$SRC/$f" ] || touch "$SRC/$f"; done
    rm -rf "$APPLIED"
fi
mkdir -p "$APPLIED"

# Patches like a quilt stack: keep the longest unchanged prefix, revert the rest newest first,
# apply the wanted ones after it. patch(1) gives every file it writes a new mtime, so make
# recompiles exactly what changed.
mapfile -t have < <(ls "$APPLIED"/*.patch 2>/dev/null | sort || true)
mapfile -t wanted < <(printf '%s\n' $PATCHES | sed '/^$/d')
keep=0
while [ $keep -lt ${#have[@]} ] && [ $keep -lt ${#wanted[@]} ] &&
      [ "$(basename "${have[$keep]}")" = "$(basename "${wanted[$keep]}")" ] &&
      cmp -s "${have[$keep]}" "${wanted[$keep]}"; do
    keep=$((keep + 1))
done
for ((i = ${#have[@]} - 1; i >= keep; i--)); do
    log "reverting $(basename "${have[$i]}")"
    if ! patch -d "$SRC" -p1 -R -s -f --no-backup-if-mismatch < "${have[$i]}" >/dev/null; then
        log "cannot revert ${have[$i]}: re-extracting the source on the next run"
        rm -rf "$CACHE/src"; exit 1
    fi
    rm -f "${have[$i]}"
done
for ((i = keep; i < ${#wanted[@]}; i++)); do
    log "applying $(basename "${wanted[$i]}")"
    patch -d "$SRC" -p1 -s -f --no-backup-if-mismatch < "${wanted[$i]}" >/dev/null ||
        { log "${wanted[$i]} does not apply to $SRC_PKG"; rm -rf "$CACHE/src"; exit 1; }
    cp "${wanted[$i]}" "$APPLIED/"
done

# Configuration: allnoconfig + the fragment, redone only when the fragment changed (kbuild then
# recompiles only what the changed options reach).
cfg_want=$(sha256sum < "$FRAGMENT" | cut -c1-16)
if [ ! -f "$BUILD/.config" ] || [ "$(cat "$BUILD/smmu-hypd.fragment" 2>/dev/null)" != "$cfg_want" ]; then
    log "configuring (allnoconfig + $(basename "$FRAGMENT"))"
    mkdir -p "$BUILD"
    make -s -C "$SRC" O="$BUILD" "${MAKE_ARGS[@]}" allnoconfig >/dev/null
    "$SRC/scripts/kconfig/merge_config.sh" -m -O "$BUILD" "$BUILD/.config" "$FRAGMENT" >/dev/null
    make -s -C "$SRC" O="$BUILD" "${MAKE_ARGS[@]}" olddefconfig >/dev/null
    # Every option the fragment asks for must have survived (a missing dependency drops it silently).
    lost=""
    while read -r line; do
        case "$line" in
            CONFIG_*=*) grep -qx "$line" "$BUILD/.config" || lost="$lost $line" ;;
            "# CONFIG_"*" is not set") opt=${line#\# }; opt=${opt%% *}
                ! grep -q "^$opt=" "$BUILD/.config" || lost="$lost $opt=n" ;;
        esac
    done < "$FRAGMENT"
    [ -z "$lost" ] || { log "options not in the final .config:$lost"; exit 1; }
    echo "$cfg_want" > "$BUILD/smmu-hypd.fragment"
fi

log "building Image (~6-10 min the first time; a changed patch ~1-2 min)"
make -C "$SRC" O="$BUILD" "${MAKE_ARGS[@]}" -j"${SMMU_HYPD_JOBS:-2}" Image >"$CACHE/make.log" 2>&1 ||
    { grep -B2 -A12 -E 'error|Error' "$CACHE/make.log" | head -n 60 >&2; exit 1; }
cp "$BUILD/arch/arm64/boot/Image" "$IMAGE.tmp"
mv "$IMAGE.tmp" "$IMAGE"
# Keep the three newest Images (another checkout may still be booting an older stamp's).
ls -t "$CACHE"/Image-* 2>/dev/null | tail -n +4 | xargs -r rm -f
echo "$IMAGE"
