#!/bin/bash
# Sets up what is missing, builds, and runs smmu-hypd in the foreground on the default (Tegra234) config.
# As root the socket is /run/smmu-hypd/smmu-hypd.sock; otherwise $XDG_RUNTIME_DIR/smmu-hypd/smmu-hypd.sock
# (or /tmp/smmu-hypd-$USER/). Stop it with Ctrl-C. Extra arguments go to smmu-hypd (e.g. --finalize manual).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
export PATH=/opt/swift/usr/bin:$PATH
SCRATCH=${SCRATCH:-.build}
swift build --scratch-path "$SCRATCH" --product smmu-hypd
swift build --scratch-path "$SCRATCH" --product smmuctl
BIN=$(swift build --scratch-path "$SCRATCH" --show-bin-path)
ARGS=(--config Config/tegra234.yaml)
if [ "$(id -u)" -ne 0 ]; then
    DIR=${XDG_RUNTIME_DIR:-/tmp/smmu-hypd-$(id -un)}
    ARGS+=(--socket "$DIR/smmu-hypd/smmu-hypd.sock")
    SOCK="$DIR/smmu-hypd/smmu-hypd.sock"
else
    SOCK=/run/smmu-hypd/smmu-hypd.sock
fi
echo "smmu-hypd on $SOCK; try: $BIN/smmuctl probe --socket $SOCK"
exec "$BIN/smmu-hypd" "${ARGS[@]}" "$@"
