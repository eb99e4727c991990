#!/bin/bash
# Sourced by test scripts: starts a systemd-journald when none listens (as on a machine without systemd as
# PID 1; a socket file left by a dead journald does not count) and stops that one, by pid, on exit.
# Needs root; otherwise leaves JOURNALD_STARTED empty.
journald_listening() {
    python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect("/run/systemd/journal/socket")' 2>/dev/null
}
JOURNALD_STARTED=""
if ! journald_listening && [ "$(id -u)" -eq 0 ]; then
    mkdir -p /run/systemd/journal
    rm -f /run/systemd/journal/socket
    /lib/systemd/systemd-journald >/dev/null 2>&1 &
    JOURNALD_STARTED=$!
    for _ in $(seq 50); do journald_listening && break; sleep 0.1; done
    stop_journald() { kill "$JOURNALD_STARTED" 2>/dev/null || true; wait "$JOURNALD_STARTED" 2>/dev/null || true; }
    trap stop_journald EXIT
fi
