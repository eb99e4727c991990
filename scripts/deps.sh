#!/bin/bash
# Installs what a fresh Debian 12 with Swift at /opt/swift lacks for building and testing smmu-hypd.
# Fast when everything is present (dpkg -s only). Source it or run it.
set -euo pipefail
export PATH=/opt/swift/usr/bin:$PATH
NEEDED=(libsystemd-dev systemd python3 pkg-config util-linux)
missing=()
for p in "${NEEDED[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    echo "deps: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v swift >/dev/null || { echo "deps: swift not found (expected /opt/swift/usr/bin/swift)" >&2; exit 1; }
