#!/usr/bin/env python3
"""Restart and crash survival under load, run inside the systemd-as-PID-1 namespace by scripts/systemd-restart-test.sh.

64 host clients pipeline requests (batches of 16) whose answers they can check: MEM_WRITE of a per-client counter to
the client's own page, MEM_READ of it back, and READ of an ID register. Each checks that every answer arrives, in
order, exactly once (tags), with the right value. Meanwhile the main thread restarts the daemon
(`systemctl restart smmu-hypd`) and kills it (`kill -9 MainPID`, systemd restarts it), and after each:
  - no client saw its connection closed (a closed connection fails the test);
  - DUMP (through an admin connection opened before the first restart, which survives too) equals the DUMP taken just
    before, except the counters that legitimately advance (`statistics` and IOTLB counters);
  - the downtime: from the restart command or SIGKILL to the answer to a request the probe connection (opened
    before, so it survives) sends once the old process has exited, printed as p50/p99 per kind (a benchmark
    number: nothing asserts on it).
A ring client (RING: requests through shared memory, journaled like the socket's) pipelines batches of 16 frames
and single frames and checks every answer in order, exactly once, sleeping on the ring's futex while it waits (a
restart must wake it). A MEM_MAP client checks that the daemon still sees through its mapping; a walker (without a guest) keeps its DMA page
tables in memory it lent (MEM_MAP) and unmaps each IOVA right after its translation, as a guest in strict mode does,
so every restart replays translations whose descriptors are gone (the replay must read the journaled ones); a
device connection that shared a
DMA_EPOCH page checks after each restart that the page never went back and still moves when the probe changes an SMR,
and an EVENTS subscriber that a global fault the probe raises and clears reaches it.
At the end, admin STATS must count exactly the requests the clients sent (none applied twice or lost).
With SMMU_RESTART_QMP=SOCKET a QEMU guest runs against the same daemon (scripts/systemd-restart-guest-test.sh): the
SMMU's registers are its driver's, so the probe writes no SMR and raises no fault (no epoch or events check), the
clients' RAM is SMMU_RESTART_HOST_RAM (a host_ram region the guest does not have), and STATS, which counts the guest's
requests too, is not compared with what the clients sent. Each round then restarts (or kills) the daemon twice: once
with the guest running its block workload (its DMA in flight; its driver writes registers all the time, TLBIVAL on
every unmap, so DUMP cannot be compared across it), and once with the guest's vCPU and devices stopped (QMP stop, then
cont after the second DUMP), across which DUMP must be equal. A DUMP that differs is written to
WORKDIR/dump-{before,after}.json.
Usage: restart-clients.py WORKDIR [ROUNDS]
"""
import json
import os
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, sys.argv[1])
from smmu_client import (SMMUClient, Role, Opcode, Status, encode_frame, mem_read_payload, mem_write_payload,
                         read_payload)

SOCK = "/run/smmu-hypd/smmu-hypd.sock"
CLIENTS = 64
BATCH = 16
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
HOST_RAM = int(os.environ.get("SMMU_RESTART_HOST_RAM", "0x80000000"), 0)
QMP = os.environ.get("SMMU_RESTART_QMP")


class GuestPause:
    """QMP stop/cont of the QEMU guest, so that a DUMP is not taken in the middle of its driver's sequence."""

    def __init__(self, path):
        import socket
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.f = self.s.makefile("rw")
        json.loads(self.f.readline())  # greeting
        self.command("qmp_capabilities")

    def command(self, name):
        self.f.write(json.dumps({"execute": name}) + "\n")
        self.f.flush()
        while True:
            reply = json.loads(self.f.readline())
            if "return" in reply:
                return
            if "error" in reply:
                raise AssertionError(f"QMP {name}: {reply['error']}")


class Client(threading.Thread):
    def __init__(self, index, idr0_address, idr0):
        super().__init__(daemon=True)
        self.index = index
        self.idr0_address = idr0_address
        self.idr0 = idr0
        self.page = HOST_RAM + 0x100000 + index * 0x1000
        self.sent = 0          # requests sent (HELLO included)
        self.answered = 0
        self.error = None
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.idle = threading.Event()
        self.c = SMMUClient(SOCK, timeout=60.0)

    def run(self):
        try:
            self.c.hello(Role.HOST, f"restart-client-{self.index}")
            self.sent += 1
            self.answered += 1
            value = self.index << 32
            while not self.stop.is_set():
                if held(self):
                    continue
                requests, expect = [], []
                for _ in range(BATCH // 4):
                    value += 1
                    requests.append((Opcode.MEM_WRITE, mem_write_payload(self.page, struct.pack("<Q", value))))
                    expect.append(("ok", None))
                    requests.append((Opcode.MEM_READ, mem_read_payload(self.page, 8)))
                    expect.append(("mem", value))
                    requests.append((Opcode.READ, read_payload(self.idr0_address, 4)))
                    expect.append(("reg", self.idr0))
                    requests.append((Opcode.MEM_READ, mem_read_payload(self.page, 8)))
                    expect.append(("mem", value))
                self.sent += len(requests)
                frames = self.c.pipeline(requests)  # checks tags and opcodes: in order, exactly once
                for frame, (kind, want) in zip(frames, expect):
                    if frame.header.status != Status.OK:
                        raise AssertionError(f"client {self.index}: status {Status(frame.header.status).name}")
                    if kind == "mem" and struct.unpack("<Q", frame.payload)[0] != want:
                        raise AssertionError(f"client {self.index}: read {frame.payload.hex()}, wrote {want:#x}")
                    if kind == "reg" and struct.unpack("<Q", frame.payload)[0] != want:
                        raise AssertionError(f"client {self.index}: IDR0 {frame.payload.hex()}, expected {want:#x}")
                self.answered += len(frames)
                time.sleep(0.02)
        except Exception as e:  # noqa: BLE001 -- reported by the main thread
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.idle.set()


def held(client):
    """True (after a short sleep) while the main thread has `client` paused for a DUMP; `idle` says it is."""
    if client.paused.is_set():
        client.idle.set()
        time.sleep(0.01)
        return True
    client.idle.clear()
    return False


def run(*argv):
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


def main_pid():
    return int(run("systemctl", "show", "-p", "MainPID", "--value", "smmu-hypd"))


def gone(pid):
    """Waits until the process has exited (its /proc entry is gone or a zombie)."""
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except (FileNotFoundError, ProcessLookupError):
            return
        time.sleep(0.001)


def wait_restarted(old_pid):
    for _ in range(600):
        pid = main_pid()
        state = run("systemctl", "show", "-p", "ActiveState", "--value", "smmu-hypd")
        if pid not in (0, old_pid) and state == "active":
            return pid
        time.sleep(0.01)
    raise AssertionError("smmu-hypd did not come back")


# Counters that advance by themselves while clients work, or by a restart's own requests: the DUMP comparison drops
# them. Everything else (lifecycle, ownership, every virtual and physical register, VMs) must be equal.
VOLATILE = {"statistics", "iotlb", "tlb", "tlb_hits", "tlb_misses"}


def stable(dump):
    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k not in VOLATILE}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v
    return strip(json.loads(dump))


def volatile_keys(dump):
    found = set()
    def walk(v, path):
        if isinstance(v, dict):
            for k, x in v.items():
                if k in VOLATILE:
                    found.add(path + k)
                else:
                    walk(x, path + k + ".")
        elif isinstance(v, list):
            for x in v:
                walk(x, path + "[].")
    walk(json.loads(dump), "")
    return sorted(found)


def lent_memory(base, size, name):
    """A host connection named `name` that lent a sealed memfd of `size` bytes at `base` (MEM_MAP), and the memfd
    mapped here: (fd, mmap, client)."""
    import mmap
    from smmu_client import sealed_memfd
    fd = sealed_memfd(size, name)
    view = mmap.mmap(fd, size)
    c = SMMUClient(SOCK, timeout=60.0)
    c.hello(Role.HOST, name)
    c.mem_map(base, size, 0, fd)
    return fd, view, c


class Mapper(threading.Thread):
    """A client that lends its own memory (MEM_MAP of a sealed memfd) and checks, across every restart, that the
    daemon still sees through that mapping: it writes through its mmap and reads through the daemon, and back."""
    BASE = HOST_RAM + 0x2000000
    SIZE = 0x10000

    def __init__(self):
        super().__init__(daemon=True)
        self.fd, self.view, self.c = lent_memory(self.BASE, self.SIZE, "restart-mapper")
        self.sent = 2
        self.error = None
        self.stop = threading.Event()

    def run(self):
        try:
            n = 0
            while not self.stop.is_set():
                n += 1
                off = (n * 64) % self.SIZE
                mine = struct.pack("<Q", n * 0x9E3779B97F4A7C15 & (2**64 - 1))
                self.view[off:off + 8] = mine
                theirs = self.c.mem_read(self.BASE + off, 8)
                if theirs != mine:
                    raise AssertionError(f"mapper: daemon reads {theirs.hex()} where the client wrote {mine.hex()}")
                back = struct.pack("<Q", n)
                self.c.mem_write(self.BASE + off + 8, back)
                self.sent += 2
                if self.view[off + 8:off + 16] != back:
                    raise AssertionError("mapper: the daemon's MEM_WRITE did not reach the client's memory")
                time.sleep(0.005)
        except Exception as e:  # noqa: BLE001
            self.error = f"{type(e).__name__}: {e}"


class RingClient(threading.Thread):
    """A host connection that sends its requests through a shared-memory ring (RING, docs/protocol-v1.md): batches of
    16 frames (request_bytes set) alternating with single frames, each answer checked as the socket clients' are (tags
    in order, exactly once, the value read is the value written). It sleeps on the response word's futex while it
    waits (client_sleeping), as QEMU's device does, with a 30 s timeout: a restart that did not wake it, or that lost
    or repeated an answer, fails the test."""
    SIZE = 0x23000
    PAGE = HOST_RAM + 0x1000000
    WAIT_SECONDS = 30

    def __init__(self, idr0_address, idr0):
        import ctypes
        import mmap
        from smmu_client import sealed_memfd
        super().__init__(daemon=True)
        self.idr0_address = idr0_address
        self.idr0 = idr0
        self.fd = sealed_memfd(self.SIZE, "restart-ring")
        self.view = mmap.mmap(self.fd, self.SIZE)
        self.words = (ctypes.c_uint32 * 6).from_buffer(self.view)  # request_seq, response_seq, ..., response_bytes
        self.address = ctypes.addressof(self.words)
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.timespec = ctypes.c_long * 2
        self.c = SMMUClient(SOCK, timeout=60.0)
        self.c.hello(Role.HOST, "restart-ring")
        self.c.call_ok(0x0B, b"", fds=[self.fd])  # RING: accepted in restart mode
        self.sent = 2
        self.answered = 2
        self.sleeps = 0
        self.tag = 1
        self.error = None
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.idle = threading.Event()

    def futex(self, word, op, value, seconds=None):
        import ctypes
        t = self.timespec(seconds, 0) if seconds else None
        return self.libc.syscall(202, ctypes.c_void_p(self.address + 4 * word), op, value,  # SYS_futex (x86-64)
                                 ctypes.byref(t) if t else None, None, 0)

    def exchange(self, frames, batch):
        """Writes `frames` (encoded) to the ring, wakes the daemon, waits for the answers; returns their bytes."""
        data = b"".join(frames)
        self.view[0x1000:0x1000 + len(data)] = data
        self.words[4] = len(data) if batch else 0
        seq = (self.words[0] + 1) & 0xFFFFFFFF
        self.words[0] = seq
        self.futex(0, 1, 1)  # FUTEX_WAKE the daemon's thread (always: cheaper here than a fence and a check)
        spin = time.monotonic() + 0.001
        while True:
            seen = self.words[1]
            if seen == seq:
                break
            if time.monotonic() < spin:
                continue
            self.words[3] = 1  # client_sleeping
            if self.words[1] == seen:
                t0 = time.monotonic()
                self.futex(1, 0, seen, self.WAIT_SECONDS)  # FUTEX_WAIT while response_seq is still `seen`
                self.sleeps += 1
                if self.words[1] == seen and time.monotonic() - t0 >= self.WAIT_SECONDS - 1:
                    raise AssertionError(f"ring: no answer to request {seq} and no wake-up in {self.WAIT_SECONDS} s")
            self.words[3] = 0
        n = self.words[5]
        return bytes(self.view[0x12000:0x12000 + n])

    def run(self):
        from smmu_client import decode_header, HEADER_SIZE
        try:
            value = 0x5A5A << 32
            rounds = 0
            while not self.stop.is_set():
                if held(self):
                    continue
                rounds += 1
                value += 1
                requests = [(Opcode.MEM_WRITE, mem_write_payload(self.PAGE, struct.pack("<Q", value)), None),
                            (Opcode.MEM_READ, mem_read_payload(self.PAGE, 8), value),
                            (Opcode.READ, read_payload(self.idr0_address, 4), self.idr0),
                            (Opcode.MEM_READ, mem_read_payload(self.PAGE, 8), value)] * (BATCH // 4)
                if rounds % 2:  # one frame per exchange this time: the daemon's single-frame path
                    requests = requests[:2]
                batch = len(requests) > 1
                tags = list(range(self.tag, self.tag + len(requests)))
                self.tag += len(requests)
                frames = []
                if batch:
                    answers = self.exchange([encode_frame(op, t, p) for (op, p, _), t in zip(requests, tags)], True)
                else:
                    answers = b"".join(self.exchange([encode_frame(op, t, p)], False) for (op, p, _), t in zip(requests, tags))
                self.sent += len(requests)
                at = 0
                for (op, _, want), tag in zip(requests, tags):
                    if at + HEADER_SIZE > len(answers):
                        raise AssertionError(f"ring: {len(frames)} answers for {len(requests)} requests")
                    h = decode_header(answers[at:])
                    payload = answers[at + HEADER_SIZE:at + HEADER_SIZE + h.length]
                    at += HEADER_SIZE + h.length
                    if h.tag != tag or h.opcode != op | 0x80:
                        raise AssertionError(f"ring: answer tag {h.tag} opcode {h.opcode:#x}, expected tag {tag} "
                                             f"opcode {op | 0x80:#x} (lost, repeated or out of order)")
                    if h.status != Status.OK:
                        raise AssertionError(f"ring: status {Status(h.status).name} for opcode {op:#x}")
                    if want is not None and struct.unpack("<Q", payload)[0] != want:
                        raise AssertionError(f"ring: opcode {op:#x} read {payload.hex()}, expected {want:#x}")
                    frames.append(h)
                if at != len(answers):
                    raise AssertionError(f"ring: {len(answers) - at} bytes after the last answer")
                self.answered += len(frames)
                time.sleep(0.002)
        except Exception as e:  # noqa: BLE001
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.idle.set()


class Walker(threading.Thread):
    """A host that keeps its DMA page tables in its own memory (MEM_MAP), as a QEMU guest's are, and behaves like a
    driver in strict mode: it maps a fresh IOVA, has its device connection translate it (the answer must be the page
    it mapped), and unmaps it at once. A restart's replay of those translations must read the descriptors as they
    were (the journaled reads), not as they are now: a replay that walked the unmapped entries would leave context
    faults in the walker's bank (DUMP would differ) that no DMA ever had.
    A context bank programmed as Linux's arm_smmu_write_context_bank() does (stage 1, 4 KiB granule, 48-bit), one
    SMR/S2CR routing STREAM to it; never an IOVA twice, so no TLB invalidation is needed."""
    BASE = HOST_RAM + 0x3000000
    SIZE = 0x40000  # L0, L1, L2, then 61 L3 tables of 512 entries each
    IOVA = 0x40000000
    STREAM = 0x31
    SMR = 10
    BANK = 3

    def __init__(self, probe_window):
        super().__init__(daemon=True)
        self.fd, self.view, self.c = lent_memory(self.BASE, self.SIZE, "restart-walker")
        self.dev = SMMUClient(SOCK, timeout=60.0)
        self.dev.hello(Role.DEVICE, "restart-walker-dma")
        self.sent = 3  # two HELLOs and the MEM_MAP
        self.limit = (self.SIZE // 0x1000 - 3) * 512
        # Tables: L0[0] -> L1, L1[1] -> L2 (IOVA 0x40000000), L2[j] -> L3 table j.
        self.put(0x0000, self.BASE + 0x1000 | 3)
        self.put(0x1000 + 8 * 1, self.BASE + 0x2000 | 3)
        for j in range(self.SIZE // 0x1000 - 3):
            self.put(0x2000 + 8 * j, self.BASE + 0x3000 + 0x1000 * j | 3)
        w = probe_window
        gr1, cb = w.base + w.page_size, w.base + w.size // 2 + self.BANK * w.page_size
        writes = [
            (gr1 + 0x800 + 4 * self.BANK, 1, 4),                                   # CBA2R: VA64
            (gr1 + 4 * self.BANK, 1 << 16 | 3 << 8 | 0xF << 12, 4),                # CBAR: S1_TRANS_S2_BYPASS, NSH, WB
            (cb + 0x10, 7 << 15 | 5, 4),                                           # TCR2: SEP_UPSTREAM, PASIZE 48-bit
            (cb + 0x30, 16 | 2 << 12 | 1 << 23, 4),                                # TCR: T0SZ 16, 4 KiB, EPD1
            (cb + 0x20, self.BASE | self.BANK << 48, 8),                           # TTBR0: L0, ASID
            (cb + 0x38, 0xF404FF44, 4),                                            # MAIR0
            (cb + 0x0, 1 << 12 | 0x67, 4),                                         # SCTLR: ASIDPNE, CFIE, CFRE, AFE, TRE, M
            (w.base + 0x800 + 4 * self.SMR, 1 << 31 | self.STREAM, 4),             # SMR: VALID, ID
            (w.base + 0xC00 + 4 * self.SMR, self.BANK, 4),                         # S2CR: TRANS to the bank
        ]
        for address, value, width in writes:
            self.c.write(address, value, width)
        self.sent += len(writes)
        self.done = 0
        self.error = None
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.idle = threading.Event()

    def put(self, offset, descriptor):
        self.view[offset:offset + 8] = struct.pack("<Q", descriptor)

    def run(self):
        try:
            while not self.stop.is_set() and self.done < self.limit:
                if held(self):
                    continue
                k = self.done
                leaf = 0x3000 + 8 * k  # L3 table k // 512, entry k % 512: consecutive
                pa = HOST_RAM + 0x100000 + (k % 64) * 0x1000
                self.put(leaf, pa | 0x743)  # AF, inner shareable, EL0 read/write, page
                got = self.dev.dma(0, self.STREAM, self.IOVA + k * 0x1000 + 8)
                self.put(leaf, 0)  # unmapped right after the DMA, as iommu.strict=1 does
                self.done += 1
                self.sent += 1
                if got.fault or got.pa != pa + 8:
                    raise AssertionError(f"walker: IOVA {self.IOVA + k * 0x1000:#x} -> {got}, mapped to {pa:#x}")
                time.sleep(0.005)
        except Exception as e:  # noqa: BLE001
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.idle.set()


class EpochWatcher:
    """A device connection that shares a DMA_EPOCH page: across every restart the page must keep following the
    daemon's translation epoch (the next process maps the stored page again and the epoch continues after the value
    it shows): it never goes backwards, and a host register write that matters to translation moves it before its
    answer arrives."""

    def __init__(self):
        import mmap
        from smmu_client import sealed_memfd
        self.fd = sealed_memfd(4096, "restart-test-epoch")
        self.view = mmap.mmap(self.fd, 4096)
        self.c = SMMUClient(SOCK, timeout=60.0)
        self.c.hello(Role.DEVICE, "restart-epoch")
        self.last = struct.unpack("<Q", self.c.call_ok(0x08, b"", fds=(self.fd,)))[0]  # DMA_EPOCH
        self.sent = 2

    def value(self):
        v = struct.unpack_from("<Q", self.view, 0)[0]
        if v < self.last:
            raise AssertionError(f"the epoch page went back from {self.last} to {v}")
        self.last = v
        return v

    def check_follows(self, probe, smr_address, round_no):
        """The probe changes an SMR (VALID clear: accepted, no routing change); the page must have moved."""
        before = self.value()
        probe.write(smr_address, 0x10 + ((round_no + 1) % 2) * 0x100)  # SMR 0 was 0x10: every write changes it
        after = self.value()
        if after <= before:
            raise AssertionError(f"round {round_no}: the epoch page stayed at {before} across an SMR write")


class EventsWatcher:
    """An EVENTS subscriber: after every restart a global fault the probe raises and clears on window 0 (sCR0.GFIE
    set, then sGFSRRESTORE and sGFSR's write-one-to-clear) must reach it as two events, raised then lowered: the
    next process delivers events to the subscribers it restored."""

    def __init__(self, probe, base):
        self.c = SMMUClient(SOCK, timeout=30.0)
        self.c.hello(Role.HOST, "restart-events")
        self.stream = self.c.events()
        self.base = base
        probe.write(base, probe.read(base) | 0x4)  # sCR0.GFIE
        self.sent = 2

    def check(self, probe):
        probe.write(self.base + 0x4C, 0x2)  # sGFSRRESTORE: USF
        probe.write(self.base + 0x48, 0x2)  # sGFSR: write one to clear
        got = [next(self.stream), next(self.stream)]
        if [(e.window, e.line, e.level) for e in got] != [(0, 0, 1), (0, 0, 0)]:
            raise AssertionError(f"events after the global fault: {got}")


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main():
    admin = SMMUClient(SOCK, timeout=60.0)
    hello = admin.hello(Role.ADMIN, "restart-admin")
    probe = SMMUClient(SOCK, timeout=60.0)
    pw = probe.hello(Role.HOST, "restart-probe").windows[0]
    idr0_address = pw.base + 0x20
    idr0 = probe.read(idr0_address)
    guest = GuestPause(QMP) if QMP else None
    # State worth comparing: SMRs written (VALID clear: accepted whatever they name), a VM owning donated pages.
    # With a guest the SMRs are its driver's: not touched.
    for i in range(0 if guest else 8):
        probe.write(pw.base + 0x800 + 4 * i, 0x10 + i)
    vm = probe.vm_create()
    probe.vm_donate(vm, HOST_RAM + 0x4000000, 0x10000)
    setup = (0 if guest else 8) + 2 + (0 if guest else 2)  # SMRs, VM; the events watcher's sCR0 read and write
    clients = [Client(i, idr0_address, idr0) for i in range(CLIENTS)]
    for c in clients:
        c.start()
    mapper = Mapper()
    mapper.start()
    ring = RingClient(idr0_address, idr0)
    ring.start()
    walker = None if guest else Walker(pw)
    if walker:
        walker.start()
    epoch = None if guest else EpochWatcher()
    events = None if guest else EventsWatcher(probe, pw.base)
    print("restart-test: DUMP compared without " + ", ".join(volatile_keys(admin.dump())), flush=True)
    time.sleep(1.0)
    downtimes = {"restart": [], "kill -9": []}
    paused = {"restart": [], "kill -9": []}  # with a guest: the rounds it is stopped for, to compare DUMP
    probes = 2 + setup  # the probe's HELLO, READ and setup above

    def check_clients(when):
        for c in clients + [mapper, ring] + ([walker] if walker else []):
            if c.error:
                raise AssertionError(f"{when}: {c.error}")

    pausable = clients + [ring] + ([walker] if walker else [])

    def pause_clients():
        for c in pausable:
            c.paused.set()
        for c in pausable:
            c.idle.wait(30)

    def resume_clients():
        for c in pausable:
            c.paused.clear()

    def restart(kind):
        """Restarts or kills the daemon under the clients' load; returns the downtime in ms."""
        nonlocal probes
        time.sleep(0.3)  # under load
        old = main_pid()
        t0 = time.monotonic()
        if kind == "restart":
            subprocess.Popen(["systemctl", "restart", "smmu-hypd"])
        else:
            os.kill(old, 9)
        gone(old)  # the probe's request must be answered by the next process, not the old one on its way out
        probe.read(idr0_address)  # stored connection: answered by the next process
        downtime = (time.monotonic() - t0) * 1000
        probes += 1
        wait_restarted(old)
        return downtime

    for round_no in range(2 * ROUNDS):
        kind = "restart" if round_no % 2 == 0 else "kill -9"
        n = round_no // 2 + 1
        running = ""
        if guest:
            # With the guest running (its block workload's DMA in flight): nothing may break, but its driver keeps
            # writing registers (TLBIVAL on every unmap), so DUMP cannot be compared across this one.
            downtimes[kind].append(restart(kind))
            check_clients(f"after {kind} #{n} with the guest running")
            running = f"with the guest running: downtime {downtimes[kind][-1]:.1f} ms; "
            guest.command("stop")  # the second one of the round: with the guest's vCPU and devices stopped
        pause_clients()
        before = stable(admin.dump())
        resume_clients()
        downtime = restart(kind)
        if guest:
            paused[kind].append(downtime)
        else:
            downtimes[kind].append(downtime)
        check_clients(f"after {kind} #{n}")
        pause_clients()
        after = stable(admin.dump())
        if guest:
            guest.command("cont")
        if before != after:
            diff = [k for k in set(before) | set(after) if before.get(k) != after.get(k)]
            with open(os.path.join(sys.argv[1], "dump-before.json"), "w") as f:
                json.dump(before, f, indent=1, sort_keys=True)
            with open(os.path.join(sys.argv[1], "dump-after.json"), "w") as f:
                json.dump(after, f, indent=1, sort_keys=True)
            raise AssertionError(f"DUMP differs after {kind} #{n}: keys {diff}")
        if not guest:
            epoch.check_follows(probe, pw.base + 0x800, round_no)
            events.check(probe)
            probes += 3
        resume_clients()
        print(f"restart-test: {kind} #{n}: {running}downtime {downtime:.1f} ms"
              f"{' with the guest paused' if guest else ''}, {sum(c.answered for c in clients)} answers so far, "
              f"DUMP equal", flush=True)
    for c in pausable + [mapper]:
        c.stop.set()
    for c in pausable + [mapper]:
        c.join(60)
    check_clients("at the end")
    sent = sum(c.sent for c in clients)
    answered = sum(c.answered for c in clients)
    assert sent == answered, f"{sent} requests sent, {answered} answered"
    stats = json.loads(admin.stats())
    # Every request of the clients and the probe, the admin's HELLO, and the admin's DUMPs so far (this STATS is
    # counted after it is answered or before: both are accepted).
    assert ring.sent == ring.answered, f"ring: {ring.sent} requests sent, {ring.answered} answered"
    expected = sent + ring.sent + mapper.sent + probes + 2 + 4 * ROUNDS + (0 if guest else epoch.sent + events.sent + walker.sent)
    total = stats.get("operations_total", stats.get("total_operations"))
    if guest:
        print(f"restart-test: STATS counts {total} operations, the guest's included (not compared)")
    elif total is not None:
        assert total in (expected, expected + 1), f"STATS counts {total} operations, clients sent {expected}"
        print(f"restart-test: STATS counts {total} operations, as sent (none lost, none applied twice)")
    for kind, values in downtimes.items():
        half = len(values) // 2
        print(f"restart-test: downtime after {kind}: p50 {percentile(values, 50):.1f} ms, "
              f"p99 {percentile(values, 99):.1f} ms, max {max(values):.1f} ms over {len(values)}; p50 of the first "
              f"{half} {percentile(values[:half], 50):.1f} ms, of the last {len(values) - half} "
              f"{percentile(values[half:], 50):.1f} ms (flat: checkpoints bound the replay)")
    for kind, values in paused.items():
        if values:
            print(f"restart-test: downtime after {kind} with the guest stopped: p50 {percentile(values, 50):.1f} ms, "
                  f"p99 {percentile(values, 99):.1f} ms over {len(values)}")
    print(f"restart-test: the ring client's {ring.answered} answers checked (in order, exactly once), "
          f"{ring.sleeps} futex sleeps, all woken", flush=True)
    print(f"restart-test: {CLIENTS} clients, {answered} answers checked, no connection closed"
          + ("" if guest else f"; the epoch page followed every restart (now {epoch.value()}); the walker's "
                              f"{walker.done} DMAs through tables in its own memory, each IOVA unmapped right after, "
                              f"all translated"))


if __name__ == "__main__":
    main()
