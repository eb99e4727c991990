#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A tiny stand-in for smmu-hypd, for developing the QEMU device only.

It speaks protocol v1 (HELLO, READ, WRITE, DMA, MEM_MAP, EVENTS, STATS) over a plain
MMU-500 register file with no hypervisor in it: no ownership, no denials, no audit.
Stage-1 4 KiB-granule walks in the guest RAM the client maps, stream matching, W1C fault
registers and level interrupts are just enough for Linux's arm-smmu driver to probe,
attach, map and take faults. The real test runs against smmu-hypd.

    standin-daemon.py SOCKET
"""
import json
import mmap
import os
import socket
import struct
import sys
import threading

BASE, SIZE, PAGE = 0x0B000000, 0x1000000, 0x10000
NUM_CB, NUM_SMR = 8, 40
RAM_BASE = 0x40000000
CB_BASE = SIZE // 2
IDR = {0x20: 0xFC010E00 | 0x1E00 | NUM_SMR,   # S1TS S2TS NTS SMS ATOSNS, 1 irpt, 15 SID bits
       0x24: 0xE0000000 | NUM_CB,              # 64 KiB pages, 128 pages per half
       0x28: 0x00005555, 0x3C: 0x21}
SGFSR, SCR0, SGFSYNR1 = 0x48, 0x0, 0x54
STATUS_REGS = {0x74}                           # sTLBGSTATUS: syncs complete at once
CB_SCTLR, CB_TCR, CB_TTBR0, CB_FSR, CB_FAR, CB_FSYNR0, CB_TLBSTATUS = 0, 0x30, 0x20, 0x58, 0x60, 0x68, 0x7F4
FAULT_TRANSLATION, FAULT_UNIDENTIFIED, FAULT_STREAM = 3, 1, 2

lock = threading.Lock()
regs = {}                     # window offset -> 32-bit word
ram = None                    # mmap of the client's guest RAM
event_socks = []
levels = {}
stats = {"dma_ok": 0, "dma_fault": 0, "reads": 0, "writes": 0}


def rd(off):
    if off in IDR:
        return IDR[off]
    if off in STATUS_REGS or (off >= CB_BASE and (off - CB_BASE) % PAGE == CB_TLBSTATUS):
        return 0
    return regs.get(off, 0)


def wr(off, val):
    val &= 0xFFFFFFFF
    if off in IDR:
        return
    cb = (off - CB_BASE) % PAGE if off >= CB_BASE else None
    if off == SGFSR or cb == CB_FSR:
        regs[off] = rd(off) & ~val
    else:
        regs[off] = val


def rd64(off):
    return rd(off) | rd(off + 4) << 32


def cb_page(n):
    return CB_BASE + n * PAGE


def compute_levels():
    out = {0: int(bool(rd(SGFSR) & 0x1FF) and bool(rd(SCR0) & 2))}
    for line in range(1, NUM_CB + 1):
        out[line] = 0
    for n in range(NUM_CB):
        p = cb_page(n)
        if rd(p + CB_FSR) & 0x1FE and rd(p + CB_SCTLR) & 0x40:
            out[1 + (rd(0x10000 + 4 * n) >> 24)] = 1
    return out


def publish():
    """Send an event for every line whose level changed (called with the lock held)."""
    global levels
    new = compute_levels()
    for line, level in new.items():
        if levels.get(line, 0) != level:
            msg = struct.pack("<HBBIII", 0x4D53, 1, 0xB0, 0, 0, 12) + struct.pack("<III", 0, line, level)
            for s in list(event_socks):
                try:
                    s.sendall(msg)
                except OSError:
                    event_socks.remove(s)
    levels = new


def walk(ttbr, tcr, iova):
    """AArch64 stage-1, 4 KiB granule, TTBR0 only. Returns a physical address or None."""
    t0sz = tcr & 0x3F
    va_bits = 64 - t0sz
    level = 4 - (va_bits - 12 + 8) // 9
    table = ttbr & 0xFFFFFFFFF000
    while True:
        shift = 12 + 9 * (3 - level)
        index = (iova >> shift) & 0x1FF
        pa = table + index * 8
        if ram is None or not (RAM_BASE <= pa < RAM_BASE + len(ram)):
            return None
        desc = struct.unpack_from("<Q", ram, pa - RAM_BASE)[0]
        if not desc & 1:
            return None
        if level == 3 or not desc & 2:
            if level == 3 and not desc & 2:
                return None
            out = desc & 0xFFFFFFFFF000 & ~((1 << shift) - 1)
            return out | (iova & ((1 << shift) - 1))
        table = desc & 0xFFFFFFFFF000
        level += 1


def translate(sid, iova, write):
    matches = [n for n in range(NUM_SMR)
               if rd(0x800 + 4 * n) >> 31
               and ((sid ^ rd(0x800 + 4 * n)) & ~(rd(0x800 + 4 * n) >> 16) & 0x7FFF) == 0]
    if not matches:
        if rd(SCR0) & (1 << 10):
            regs[SGFSR] = rd(SGFSR) | 2
            regs[SGFSYNR1] = sid
            return None, FAULT_UNIDENTIFIED
        return iova, 0
    s2cr = rd(0xC00 + 4 * matches[0])
    kind = (s2cr >> 16) & 3
    if kind == 1:
        return iova, 0
    if kind == 2:
        return None, FAULT_STREAM
    n = s2cr & 0xFF
    p = cb_page(n)
    if not rd(p + CB_SCTLR) & 1:
        return iova, 0
    pa = walk(rd64(p + CB_TTBR0), rd(p + CB_TCR), iova)
    if pa is None:
        regs[p + CB_FSR] = rd(p + CB_FSR) | 2
        regs[p + CB_FAR], regs[p + CB_FAR + 4] = iova & 0xFFFFFFFF, iova >> 32
        regs[p + CB_FSYNR0] = 0x10 if write else 0
        regs[0x10000 + 0x400 + 4 * n] = sid
        return None, FAULT_TRANSLATION
    return pa, 0


def recv_exact(conn, n, fds=None):
    buf = b""
    while len(buf) < n:
        if fds is not None:
            data, anc, _, _ = conn.recvmsg(n - len(buf), socket.CMSG_SPACE(4 * 4))
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(struct.unpack("<%di" % (len(payload) // 4), payload[:len(payload) // 4 * 4]))
        else:
            data = conn.recv(n - len(buf))
        if not data:
            raise EOFError
        buf += data
    return buf


def reply(conn, op, tag, status, payload=b""):
    conn.sendall(struct.pack("<HBBIII", 0x4D53, 1, op | 0x80, tag, status, len(payload)) + payload)


def serve(conn):
    global ram
    greeted = False
    try:
        while True:
            fds = []
            magic, ver, op, tag, _, length = struct.unpack("<HBBIII", recv_exact(conn, 16, fds))
            body = recv_exact(conn, length, fds) if length else b""
            with lock:
                if op == 0x01:
                    greeted = True
                    name = b"virt0".ljust(8, b"\0")
                    reply(conn, op, tag, 0, struct.pack("<IIII", 1, 1, 1, 0)
                          + struct.pack("<QQIHH", BASE, SIZE, PAGE, NUM_CB, NUM_SMR) + name)
                elif not greeted:
                    reply(conn, op, tag, 7)
                elif op == 0x02:
                    addr, width, _ = struct.unpack("<QII", body)
                    off = addr - BASE
                    val = rd(off) if width == 4 else rd64(off)
                    stats["reads"] += 1
                    reply(conn, op, tag, 0, struct.pack("<Q", val))
                elif op == 0x03:
                    addr, val, width, _ = struct.unpack("<QQII", body)
                    off = addr - BASE
                    wr(off, val)
                    if width == 8:
                        wr(off + 4, val >> 32)
                    stats["writes"] += 1
                    publish()
                    reply(conn, op, tag, 0)
                elif op == 0x04:
                    window, sid, iova, flags, _ = struct.unpack("<IIQII", body)
                    pa, fault = translate(sid, iova, flags & 1)
                    stats["dma_fault" if fault else "dma_ok"] += 1
                    publish()
                    reply(conn, op, tag, 8 if fault else 0, struct.pack("<QII", pa or 0, fault, 0))
                elif op == 0x07:
                    addr, size, offset = struct.unpack("<QQQ", body)
                    if len(fds) != 1:
                        reply(conn, op, tag, 5)
                        return
                    ram = mmap.mmap(fds[0], size, mmap.MAP_SHARED, offset=offset)
                    os.close(fds[0])
                    reply(conn, op, tag, 0)
                elif op == 0x20:
                    reply(conn, op, tag, 0, json.dumps(stats).encode())
                elif op == 0x30:
                    reply(conn, op, tag, 0)
                    event_socks.append(conn)
                    for line, level in levels.items():
                        if level:
                            conn.sendall(struct.pack("<HBBIII", 0x4D53, 1, 0xB0, 0, 0, 12)
                                         + struct.pack("<III", 0, line, 1))
                    return
                else:
                    reply(conn, op, tag, 6)
    except (EOFError, OSError):
        pass


def main():
    path = sys.argv[1]
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(16)
    print("standin: READY on", path, flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
