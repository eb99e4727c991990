# Sourced by the systemd-as-PID-1 tests: boots systemd as PID 1 in private PID and mount namespaces (private /run and
# /tmp), with smmu-hypd.service and smmu-hypd.socket installed in its /run/systemd/system and ExecStart pointing at a
# copy of the built binary. Before sourcing set REPO and BIN; after it: WORK (the test's directory), SDPID (systemd,
# outside), in_ns, journal_has, fail; the EXIT trap powers systemd off and removes WORK.
# PID1_CONFIG names the config to start from (default Config/tegra234.yaml); PID1_CONFIG_SED and PID1_UNIT_SED are
# extra sed expressions for the config and the service unit.
[ -x "$BIN" ] || { echo "pid1-test: no smmu-hypd binary at $BIN (build first)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "pid1-test: needs root" >&2; exit 1; }

# Not under /tmp or /run (private tmpfs mounts in the namespace), /var/tmp (the unit's PrivateTmp) or
# /home and /root (its ProtectHome): the checkout may be in any of them, so the binary is copied here.
WORK=$(mktemp -d /var/lib/smmu-hypd-pid1-test.XXXXXX)
chmod 0755 "$WORK"
cp "$BIN" "$WORK/smmu-hypd"
cp "$REPO/clients/python/smmu_client.py" "$WORK/"
chmod 0755 "$WORK/smmu-hypd"
BIN="$WORK/smmu-hypd"
sed -e "${PID1_CONFIG_SED:-}" "${PID1_CONFIG:-$REPO/Config/tegra234.yaml}" > "$WORK/smmu-hypd.yaml"
chmod 0644 "$WORK/smmu-hypd.yaml"
sed -e "s#^ExecStart=.*#ExecStart=$BIN --config $WORK/smmu-hypd.yaml#" -e "${PID1_UNIT_SED:-}" \
    "$REPO/systemd/smmu-hypd.service" > "$WORK/smmu-hypd.service"
cp "$REPO/systemd/smmu-hypd.socket" "$WORK/"

unshare --pid --fork --mount --mount-proc --propagation private sh -c "
    mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /tmp &&
    { [ ! -d /var/log/journal ] || mount -t tmpfs tmpfs /var/log/journal; } &&
    mkdir -p /run/systemd/system &&
    cp '$WORK/smmu-hypd.service' '$WORK/smmu-hypd.socket' /run/systemd/system/ &&
    exec /lib/systemd/systemd --system --unit=basic.target" >"$WORK/systemd.log" 2>&1 &
UNSHARE=$!
SDPID=""
cleanup() {
    if [ -n "$SDPID" ] && kill -0 "$SDPID" 2>/dev/null; then
        nsenter -t "$SDPID" -m -p systemctl poweroff --no-block >/dev/null 2>&1 || true
        for _ in $(seq 100); do kill -0 "$UNSHARE" 2>/dev/null || break; sleep 0.1; done
    fi
    if kill -0 "$UNSHARE" 2>/dev/null; then kill -9 "$UNSHARE" 2>/dev/null || true; fi
    wait "$UNSHARE" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "pid1-test: FAIL: $*" >&2; tail -n 20 "$WORK/systemd.log" >&2 || true; [ -n "$SDPID" ] && in_ns journalctl -u smmu-hypd --no-pager -n 40 >&2 || true; exit 1; }

for _ in $(seq 100); do
    SDPID=$(cat /proc/$UNSHARE/task/$UNSHARE/children 2>/dev/null | awk '{print $1}')
    [ -n "$SDPID" ] && break
    sleep 0.1
done
[ -n "$SDPID" ] || fail "systemd did not start"
in_ns() { nsenter -t "$SDPID" -m -p "$@"; }
# journald takes stderr lines asynchronously: poll for a line instead of reading once.
journal_has() {
    for _ in $(seq 50); do
        # Not grep -q: it would exit at the first match and SIGPIPE journalctl, failing under pipefail.
        in_ns journalctl -u smmu-hypd --no-pager | grep -- "$1" >/dev/null && return 0
        sleep 0.1
    done
    return 1
}
for _ in $(seq 300); do
    state=$(in_ns systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) break ;; esac
    sleep 0.1
done
echo "pid1-test: systemd is $state (pid $SDPID outside)"
