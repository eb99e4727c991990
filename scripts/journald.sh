#!/bin/bash
# Sourced by test scripts: starts a systemd-journald when none listens (as on a machine without systemd as
# PID 1) and stops that one, by pid, on exit. Needs root; otherwise leaves JOURNALD_STARTED empty.
JOURNALD_STARTED=""
if [ ! -S /run/systemd/journal/socket ] && [ "$(id -u)" -eq 0 ]; then
    mkdir -p /run/systemd/journal
    /lib/systemd/systemd-journald >/dev/null 2>&1 &
    JOURNALD_STARTED=$!
    for _ in $(seq 50); do [ -S /run/systemd/journal/socket ] && break; sleep 0.1; done
    stop_journald() { kill "$JOURNALD_STARTED" 2>/dev/null || true; wait "$JOURNALD_STARTED" 2>/dev/null || true; }
    trap stop_journald EXIT
fi
