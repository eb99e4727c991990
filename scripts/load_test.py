#!/usr/bin/env python3
"""Load and fault tests for smmu-hypd (README, "Performance"), run by scripts/load-test.sh.

Starts the daemon on a private socket with immediate finalization and a NOTIFY_SOCKET of its own,
then checks, printing one line per check:
  - 64 clients x 10,000 pipelined READ/WRITE operations: every reply there, in order, OK;
  - a client killed mid-frame: the others keep being served, its connection is reclaimed;
  - a client that never reads: the daemon's RSS stays bounded while it floods, others are served;
  - 1,000 connects and disconnects: no fd leak (/proc/PID/fd before and after);
  - journald stopped mid-run (when this runs with a private journald, see load-test.sh): no hang,
    and STATS' denial count equals the SMMU_COUNT sum of the journal plus the stderr fallback;
  - SIGTERM under load: every answer is a whole frame in order, STOPPING=1 arrives, exit status 0.
Exits 1 if any check failed. Python stdlib only.
"""
import argparse
import json
import os
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients", "python"))
import smmu_client as sc  # noqa: E402

HEADER = struct.Struct("<HBBIII")
READ, WRITE = 0x02, 0x03
FAILURES = []


def check(ok, what, detail=""):
    print(("ok   " if ok else "FAIL ") + what + (f": {detail}" if detail else ""), flush=True)
    if not ok:
        FAILURES.append(what)
    return ok


# --- the daemon --------------------------------------------------------------------------------

class NotifyReceiver:
    """A NOTIFY_SOCKET: collects every sd_notify datagram."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            self.messages.extend(data.decode("utf-8", "replace").split("\n"))

    def seen(self, line, timeout=0.0):
        deadline = time.monotonic() + timeout
        while True:
            if line in self.messages:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


class Daemon:
    def __init__(self, binary, config, directory):
        self.socket_path = os.path.join(directory, "smmu-hypd.sock")
        self.stderr_path = os.path.join(directory, "smmu-hypd.stderr")
        self.notify = NotifyReceiver(os.path.join(directory, "notify.sock"))
        env = dict(os.environ, NOTIFY_SOCKET=self.notify.path)
        for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(k, None)
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "--config", config, "--socket", self.socket_path, "--finalize-delay", "0"],
            stdin=subprocess.DEVNULL, stdout=self.stderr, stderr=self.stderr, env=env)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"smmu-hypd exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with self.client("host") as c:
                    if c.greeting.state == sc.State.FINALIZED:
                        break
            except (OSError, sc.SMMUError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("smmu-hypd did not come up: " + self.log_tail())
            time.sleep(0.05)
        self.windows = self.client("host").greeting.windows

    @property
    def pid(self):
        return self.proc.pid

    def client(self, role, timeout=30.0):
        c = sc.SMMUClient(self.socket_path, timeout=timeout)
        c.hello(getattr(sc.Role, role.upper()), "load-test")
        return c

    def rss(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def stats(self):
        with self.client("admin") as c:
            return json.loads(c.stats())

    def wait_connections(self, expected, timeout=10.0):
        """Waits until STATS counts `expected` open connections besides the one asking."""
        deadline = time.monotonic() + timeout
        while True:
            open_now = self.stats()["connections"]["open"] - 1
            if open_now == expected or time.monotonic() > deadline:
                return open_now
            time.sleep(0.05)

    def log_tail(self, n=2000):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --- pipelined clients ------------------------------------------------------------------------

class PipelinedClient:
    """One connection sending `total` READ/WRITE requests with up to `window` outstanding, checking that
    every answer carries the next tag, the response opcode, OK and the right length."""

    def __init__(self, daemon, total, window, read_addr, write_addr, name="load"):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(daemon.socket_path)
        self.sock.sendall(sc.encode_frame(sc.Opcode.HELLO, 0, sc.hello_payload(sc.Role.HOST, name)))
        self.buf = bytearray()
        self.total = total
        self.window = window
        self.sent = 0
        self.received = 0
        self.error = None
        self.closed = False
        self.out = bytearray()
        self.read_req = sc.read_payload(read_addr)
        self.write_req = sc.write_payload(write_addr, 0xF404FF44)
        self.hello_done = False
        self.peer_gone = False
        self.read_value = None
        self.statuses = {}
        self.sock.setblocking(False)

    def _encode(self, n):
        parts = []
        for i in range(self.sent + 1, self.sent + 1 + n):
            if i & 1:
                parts.append(HEADER.pack(0x4D53, 1, READ, i, 0, 16) + self.read_req)
            else:
                parts.append(HEADER.pack(0x4D53, 1, WRITE, i, 0, 24) + self.write_req)
        self.sent += n
        self.out += b"".join(parts)

    def want_write(self):
        if self.peer_gone:
            return False
        return bool(self.out) or (self.hello_done and self.sent < self.total and self.sent - self.received < self.window // 2)

    def on_writable(self):
        if not self.out and self.hello_done and self.sent < self.total:
            self._encode(min(self.window - (self.sent - self.received), self.total - self.sent))
        if self.out:
            try:
                n = self.sock.send(self.out)
                del self.out[:n]
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                self.peer_gone = True   # the daemon closed: what it answered is still to be read
                self.out.clear()

    def on_readable(self, accept_status=(0,)):
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            if self.buf:
                self.fail(f"connection closed inside a frame ({len(self.buf)} bytes)")
            return
        self.buf += data
        at = 0
        end = len(self.buf)
        while end - at >= 16:
            magic, version, opcode, tag, status, length = HEADER.unpack_from(self.buf, at)
            if end - at < 16 + length:
                break
            if not self.hello_done:
                if opcode != 0x81 or status != 0:
                    self.fail(f"HELLO answered opcode {opcode:#x} status {status}")
                self.hello_done = True
            else:
                expected = self.received + 1
                want_op = READ if expected & 1 else WRITE
                want_len = 8 if want_op == READ and status not in (5, 6) else 0
                if tag != expected or opcode != (want_op | 0x80) or status not in accept_status or length != want_len:
                    self.fail(f"reply {self.received}: tag {tag} opcode {opcode:#x} status {status} length {length}, "
                              f"expected tag {expected}")
                    return
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if want_op == READ and status == 0:
                    value = struct.unpack_from("<Q", self.buf, at + 16)[0]
                    if self.read_value is None:
                        self.read_value = value
                    elif value != self.read_value:
                        self.fail(f"READ returned {value:#x} after {self.read_value:#x}")
                self.received += 1
            at += 16 + length
        del self.buf[:at]

    def fail(self, why):
        if self.error is None:
            self.error = why

    @property
    def done(self):
        return self.received >= self.total or self.error is not None or self.closed

    def close(self):
        self.sock.close()


def drive(clients, timeout, accept_status=(0,), stop_when=None):
    """Runs the clients' send/receive loops until all are done (or `stop_when()`); False on timeout."""
    sel = selectors.DefaultSelector()
    for c in clients:
        sel.register(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
    deadline = time.monotonic() + timeout
    try:
        while not all(c.done for c in clients):
            if stop_when is not None and stop_when():
                return True
            if time.monotonic() > deadline:
                return False
            for c in clients:
                if c.done:
                    try:
                        sel.unregister(c.sock)
                    except (KeyError, ValueError):
                        pass
                    continue
                sel.modify(c.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if c.want_write() else 0), c)
            for key, events in sel.select(timeout=0.5):
                c = key.data
                if events & selectors.EVENT_READ:
                    c.on_readable(accept_status)
                if events & selectors.EVENT_WRITE and not c.done:
                    c.on_writable()
        return True
    finally:
        sel.close()


# --- the checks ---------------------------------------------------------------------------------

def addresses(daemon):
    """READ: window 0's IDR0. WRITE: window 0, context bank 0's MAIR0 (a host bank: harmless)."""
    base, page = daemon.windows[0].base, daemon.windows[0].page_size
    numpage_bits = (daemon.client("host").read(base + 0x24) >> 28) & 7
    cb0 = base + (1 << (numpage_bits + 1)) * page
    return base + 0x20, cb0 + 0x38


def pipelined_load(daemon, read_addr, write_addr, clients=64, operations=10_000, window=256):
    t0 = time.monotonic()
    cs = [PipelinedClient(daemon, operations, window, read_addr, write_addr, f"load{i}") for i in range(clients)]
    finished = drive(cs, timeout=90)
    elapsed = time.monotonic() - t0
    errors = [f"client {i}: {c.error}" for i, c in enumerate(cs) if c.error]
    short = [i for i, c in enumerate(cs) if c.received != operations]
    total = sum(c.received for c in cs)
    values = {c.read_value for c in cs}
    for c in cs:
        c.close()
    check(finished and not errors and not short and len(values) == 1,
          f"{clients} clients x {operations} pipelined READ/WRITE (window {window}): every reply there, in order, OK",
          f"{total} replies in {elapsed:.1f} s ({total / elapsed / 1000:.0f}k/s)" if finished and not errors and not short
          else f"finished={finished} errors={errors[:3]} short={short[:5]}")


def killed_mid_frame(daemon, read_addr, write_addr):
    before = daemon.wait_connections(0)
    child = subprocess.Popen([sys.executable, "-c", f"""
import os, socket, struct, sys, time
sys.path.insert(0, {os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'clients', 'python')!r})
import smmu_client as sc
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect({daemon.socket_path!r})
s.sendall(sc.encode_frame(sc.Opcode.HELLO, 1, sc.hello_payload(sc.Role.HOST, "victim")))
frame = sc.encode_frame(sc.Opcode.WRITE, 2, sc.write_payload({write_addr}, 0xF404FF44))
s.sendall(frame * 1000 + frame[:21])
print("sent", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE)
    bystander = PipelinedClient(daemon, 20_000, 64, read_addr, write_addr, "bystander")
    line = child.stdout.readline()
    killed = False

    def kill_when_half():
        nonlocal killed
        if not killed and bystander.received >= 10_000:
            child.kill()
            killed = True
        return False

    finished = drive([bystander], timeout=60, stop_when=kill_when_half)
    if not killed:
        child.kill()
    child.wait()
    bystander.close()
    after = daemon.wait_connections(before)
    check(line.strip() == b"sent" and finished and bystander.error is None and bystander.received == 20_000
          and daemon.proc.poll() is None and after == before,
          "client killed mid-frame (SIGKILL after 1000.5 frames): the others unaffected, its connection reclaimed",
          f"bystander {bystander.received}/20000 error={bystander.error}, open connections {before} -> {after}")


def split_frames(daemon, read_addr, count=200):
    """Frames cut at every offset (7-byte writes, each read by the daemon on its own): all answered, in order."""
    stream = b"".join(sc.encode_frame(sc.Opcode.READ, 1000 + i, sc.read_payload(read_addr)) for i in range(count))
    with daemon.client("host", timeout=5.0) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        error = None
        try:
            for i in range(0, len(stream), 7):
                c.sock.sendall(stream[i:i + 7])
                if i % 70 == 0:
                    time.sleep(0.001)   # let the daemon see the pieces separately
            for i in range(count):
                f = c.recv_frame()
                if f.header.tag != 1000 + i or f.header.status != 0:
                    error = f"reply {i}: tag {f.header.tag} status {f.header.status}"
                    break
        except Exception as e:  # noqa: BLE001 - a timeout is the finding
            error = repr(e)
    check(error is None, f"{count} READs written 7 bytes at a time (frames split inside header and payload): all answered in order",
          error or "")


def never_reads(daemon, read_addr, write_addr, seconds=4.0, bound=48 << 20):
    """Floods READs without ever reading the answers: the daemon must stop reading it (back-pressure)."""
    baseline = daemon.rss()
    flooder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    flooder.connect(daemon.socket_path)
    flooder.sendall(sc.encode_frame(sc.Opcode.HELLO, 1, sc.hello_payload(sc.Role.HOST, "flooder")))
    flooder.setblocking(False)
    chunk = b"".join(sc.encode_frame(sc.Opcode.READ, 2 + i, sc.read_payload(read_addr)) for i in range(2048))
    pushed = 0
    peak = baseline
    served = 0
    error = None
    stop = time.monotonic() + seconds
    with daemon.client("host", timeout=5.0) as other:
        while time.monotonic() < stop:
            try:
                pushed += flooder.send(chunk)
            except BlockingIOError:
                pass
            try:
                if other.read(read_addr) == 0:
                    error = "READ of IDR0 gave 0"
                served += 1
            except Exception as e:  # noqa: BLE001 - any failure of the other client is the finding
                error = repr(e)
                break
            if served % 50 == 0:
                peak = max(peak, daemon.rss())
    peak = max(peak, daemon.rss())
    flooder.close()
    growth = peak - baseline
    check(error is None and served > 100 and growth < bound and daemon.proc.poll() is None,
          "a client that never reads: daemon RSS bounded while it floods, others served",
          f"pushed {pushed >> 20} MiB of READs, RSS {baseline >> 20} -> peak {peak >> 20} MiB "
          f"(+{growth >> 20} MiB, bound {bound >> 20}), other client {served} round trips, error={error}")


def connect_churn(daemon, count=1000):
    before_open = daemon.wait_connections(0)
    time.sleep(0.2)   # the STATS connection that asked is closing too
    before = daemon.fds()
    for i in range(count):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(daemon.socket_path)
        kind = i % 4
        if kind == 1:
            s.sendall(sc.encode_frame(sc.Opcode.HELLO, 1, sc.hello_payload(sc.Role.HOST, "churn")))
            s.recv(4096)
        elif kind == 2:   # a whole header and part of its payload, then gone
            s.sendall(sc.encode_frame(sc.Opcode.HELLO, 1, sc.hello_payload(sc.Role.HOST, "churn"))[:20])
        elif kind == 3:
            s.sendall(b"\xff" * 16)  # bad magic: MALFORMED, then the daemon closes
        s.close()
    after_open = daemon.wait_connections(before_open)
    deadline = time.monotonic() + 5
    after = daemon.fds()
    while after > before and time.monotonic() < deadline:   # the last closes may still be in flight
        time.sleep(0.1)
        after = daemon.fds()
    check(after == before and after_open == before_open,
          f"{count} connects and disconnects (idle, greeted, mid-frame, malformed): no fd leak",
          f"/proc/{daemon.pid}/fd {before} -> {after}, open connections {before_open} -> {after_open}")


def journal_counts(journal_dir):
    """Sum of SMMU_COUNT over smmu-hypd's audit records in the journal."""
    where = ["--directory", journal_dir] if journal_dir else []
    out = subprocess.run(["journalctl", *where, "-o", "json", "--no-pager", "SYSLOG_IDENTIFIER=smmu-hypd"],
                         capture_output=True, text=True, timeout=30)
    total = 0
    records = 0
    for line in out.stdout.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if "SMMU_RULE" in entry:
            total += int(entry.get("SMMU_COUNT", "1"))
            records += 1
    return total, records


def stderr_counts(daemon):
    """Sum of SMMU_COUNT over the audit lines the daemon wrote to stderr (its journald fallback)."""
    total = 0
    lines = 0
    for line in daemon.log_tail(1 << 30).splitlines():
        if line.startswith("smmu-hypd audit:") and "SMMU_RULE=" in line:
            m = re.search(r"\bSMMU_COUNT=(\d+)", line)
            total += int(m.group(1)) if m else 1
            lines += 1
    return total, lines


def denial_burst(daemon, address, n):
    """n host WRITEs the trap handler refuses, pipelined; every one must come back DENIED within 10 s."""
    with daemon.client("host", timeout=10.0) as c:
        t0 = time.monotonic()
        frames = c.pipeline([(sc.Opcode.WRITE, sc.write_payload(address, 0x8000_0000 | 0x7f))] * n)
        return all(f.header.status == sc.Status.DENIED for f in frames), time.monotonic() - t0


def journald_stopped(daemon, journald_pid, journal_dir):
    """Denials before and after journald stops; the journal plus stderr must add up to STATS."""
    base = daemon.windows[0].base
    smrs = daemon.client("host").read(base + 0x20) & 0xFF   # IDR0.NUMSMRG as the host sees it
    hidden_smr = base + 0x800 + 4 * (smrs + 1)              # a stream match register the hypervisor keeps
    ok1, t1 = denial_burst(daemon, hidden_smr, 300)
    deadline = time.monotonic() + 5
    d1 = daemon.stats()["denials"]
    while time.monotonic() < deadline and journal_counts(journal_dir)[0] < d1:
        time.sleep(0.2)   # summaries of the coalesced ones come with the next timer tick
    in_journal_before, _ = journal_counts(journal_dir)
    os.kill(journald_pid, signal.SIGTERM)
    for _ in range(100):
        try:
            os.kill(journald_pid, 0)
            time.sleep(0.05)
        except ProcessLookupError:
            break
    ok2, t2 = denial_burst(daemon, hidden_smr, 300)
    time.sleep(1.5)   # one summary interval: the coalesced count goes to the fallback
    stats = daemon.stats()
    denials = stats["denials"]
    journal_total, journal_records = journal_counts(journal_dir)
    fallback_total, fallback_lines = stderr_counts(daemon)
    audit = stats.get("audit", {})
    check(ok1 and ok2 and t2 < 5 and d1 >= 300 and in_journal_before == d1,
          "journald stopped mid-run: every denial answered, no hang",
          f"300 denials in {t1:.2f} s with journald, 300 in {t2:.2f} s after it stopped; "
          f"journal held {in_journal_before} of {d1} before the stop")
    check(denials == journal_total + fallback_total and fallback_lines > 0,
          "journald stopped mid-run: STATS denials == SMMU_COUNT in the journal + on the stderr fallback",
          f"STATS {denials}; journal {journal_total} ({journal_records} records); stderr {fallback_total} "
          f"({fallback_lines} lines); audit counters {audit}")


def sigterm_under_load(daemon, read_addr, write_addr):
    cs = [PipelinedClient(daemon, 1 << 30, 512, read_addr, write_addr, f"term{i}") for i in range(8)]
    started = time.monotonic()
    signalled = False

    def term_after_a_while():
        nonlocal signalled
        if not signalled and time.monotonic() - started > 1.0 and all(c.received > 1000 for c in cs):
            daemon.proc.send_signal(signal.SIGTERM)
            signalled = True
        return False

    finished = drive(cs, timeout=30, accept_status=(0, 10), stop_when=term_after_a_while)
    status = daemon.proc.wait(timeout=15)
    errors = [c.error for c in cs if c.error]
    answered = sum(c.received for c in cs)
    shutting = sum(c.statuses.get(10, 0) for c in cs)
    for c in cs:
        c.close()
    check(signalled and finished and all(c.closed for c in cs) and not errors,
          "SIGTERM under load: answers whole and in order up to the close, every connection closed",
          f"{answered} answers ({shutting} SHUTTING_DOWN) from 8 pipelining clients, errors={errors[:2]}")
    check(daemon.notify.seen("STOPPING=1", timeout=1.0), "SIGTERM: STOPPING=1 on NOTIFY_SOCKET",
          f"notifications {sorted(set(m.split('=')[0] for m in daemon.notify.messages if m))}")
    check(status == 0 and not os.path.exists(daemon.socket_path), "SIGTERM: exit status 0, socket file removed",
          f"exit {status}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--daemon", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--journald-pid", type=int, help="a private journald this run may stop")
    parser.add_argument("--journal-dir", help="journalctl --directory (default: journalctl's own default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smmu-load.") as directory:
        t0 = time.monotonic()
        daemon = Daemon(args.daemon, args.config, directory)
        try:
            check(daemon.notify.seen("READY=1", timeout=2.0), "READY=1 on NOTIFY_SOCKET after finalization")
            read_addr, write_addr = addresses(daemon)
            pipelined_load(daemon, read_addr, write_addr)
            split_frames(daemon, read_addr)
            killed_mid_frame(daemon, read_addr, write_addr)
            never_reads(daemon, read_addr, write_addr)
            connect_churn(daemon)
            if args.journald_pid:
                journald_stopped(daemon, args.journald_pid, args.journal_dir)
            else:
                print("skip journald stopped mid-run: no private journald (load-test.sh needs unshare and root)")
            sigterm_under_load(daemon, read_addr, write_addr)
        except Exception as e:  # noqa: BLE001 - report, then fail
            check(False, "load test ran to the end", repr(e) + " | daemon log: " + daemon.log_tail(600))
        finally:
            daemon.kill()
        print(f"{'FAILED: ' + ', '.join(FAILURES) if FAILURES else 'all load and fault checks passed'} "
              f"({time.monotonic() - t0:.1f} s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
