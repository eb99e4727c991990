#!/bin/bash
# Builds smmu-hypd and smmuctl (release) and installs them with the systemd units, the default
# configuration and the journal catalog. Run as root from the repository. Then:
#   systemctl enable --now smmu-hypd.socket && systemctl start smmu-hypd
set -euo pipefail
# Release builds drop Swift's exclusivity checks on the request path (Package.swift, hotPath).
export SMMU_RELEASE_FLAGS=1
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
SCRATCH=${SCRATCH:-.build-release}

swift build -c release --scratch-path "$SCRATCH" --product smmu-hypd
swift build -c release --scratch-path "$SCRATCH" --product smmuctl
BIN=$(swift build -c release --scratch-path "$SCRATCH" --show-bin-path)

install -D -m 0755 "$BIN/smmu-hypd" "$PREFIX/bin/smmu-hypd"
install -D -m 0755 "$BIN/smmuctl" "$PREFIX/bin/smmuctl"
# Keep an edited configuration; the shipped one goes beside it for comparison.
if [ -e /etc/smmu-hypd/smmu-hypd.yaml ]; then
    install -D -m 0644 Config/tegra234.yaml /etc/smmu-hypd/smmu-hypd.yaml.dist
else
    install -D -m 0644 Config/tegra234.yaml /etc/smmu-hypd/smmu-hypd.yaml
fi
install -D -m 0644 systemd/smmu-hypd.service /etc/systemd/system/smmu-hypd.service
install -D -m 0644 systemd/smmu-hypd.socket /etc/systemd/system/smmu-hypd.socket
install -D -m 0644 systemd/smmu-hypd.catalog /usr/lib/systemd/catalog/smmu-hypd.catalog
journalctl --update-catalog
if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
echo "installed: $PREFIX/bin/{smmu-hypd,smmuctl}, /etc/smmu-hypd/smmu-hypd.yaml, /etc/systemd/system/smmu-hypd.{service,socket}, catalog"
echo "start with: systemctl enable --now smmu-hypd.socket && systemctl start smmu-hypd"
