#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A protocol v1 client for qemu/guest-test.sh, standard library only.

    wire.py SOCKET wait-ready SECONDS     HELLO until the daemon says finalized; print its windows
    wire.py SOCKET dma WINDOW SID IOVA [write]   one DMA as role device; print status and fault
    wire.py SOCKET write ADDR VALUE WIDTH        one host WRITE; print the status
    wire.py SOCKET read ADDR WIDTH               one host READ; print status and value
    wire.py SOCKET stats                         STATS as role host; print the JSON
Each prints one JSON object on stdout; the exit status is 0 when the exchange happened.
The HELLO name is $WIRE_NAME (default "guest-test"): the audit's SMMU_CLIENT.
"""
import json
import os
import socket
import struct
import sys
import time

MAGIC, VERSION = 0x4D53, 1
STATUS = ["OK", "DEFERRED", "DENIED", "BAD_ADDRESS", "BAD_ACCESS", "MALFORMED",
          "UNSUPPORTED", "FORBIDDEN", "FAULT", "INVALID", "SHUTTING_DOWN"]
ROLE_HOST, ROLE_DEVICE, ROLE_ADMIN = 1, 2, 3


class Conn:
    def __init__(self, path, role, name=None):
        name = name or os.environ.get("WIRE_NAME", "guest-test")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.tag = 0
        status, body = self.call(0x01, struct.pack("<II", role, 0) + name.encode())
        if status != 0:
            raise RuntimeError("HELLO refused: " + name_of(status))
        version, self.state, count, _ = struct.unpack_from("<IIII", body)
        self.windows = []
        for i in range(count):
            base, size, page, cbs, smrs = struct.unpack_from("<QQIHH", body, 16 + 32 * i)
            name = body[16 + 32 * i + 24:16 + 32 * i + 32].rstrip(b"\0").decode()
            self.windows.append({"name": name, "base": base, "size": size, "page_size": page,
                                 "num_cb": cbs, "num_smrg": smrs})

    def recv(self, n):
        buf = b""
        while len(buf) < n:
            data = self.sock.recv(n - len(buf))
            if not data:
                raise EOFError("daemon closed the connection")
            buf += data
        return buf

    def call(self, opcode, payload=b""):
        self.tag += 1
        self.sock.sendall(struct.pack("<HBBIII", MAGIC, VERSION, opcode, self.tag, 0,
                                      len(payload)) + payload)
        magic, _, op, tag, status, length = struct.unpack("<HBBIII", self.recv(16))
        if magic != MAGIC or op != opcode | 0x80 or tag != self.tag:
            raise RuntimeError("unexpected response header")
        return status, self.recv(length) if length else b""


def name_of(status):
    return STATUS[status] if status < len(STATUS) else str(status)


def main(argv):
    path, cmd, args = argv[1], argv[2], argv[3:]
    if cmd == "wait-ready":
        deadline = time.monotonic() + float(args[0])
        last = "no connection"
        while time.monotonic() < deadline:
            try:
                c = Conn(path, ROLE_HOST, "guest-test-probe")
                if c.state == 1:
                    print(json.dumps({"state": c.state, "windows": c.windows}))
                    return 0
                last = "state %d" % c.state
            except (OSError, RuntimeError, EOFError) as e:
                last = str(e)
            time.sleep(0.1)
        print(json.dumps({"error": "not finalized: " + last}))
        return 1
    if cmd == "dma":
        c = Conn(path, ROLE_DEVICE)
        flags = 1 if args[3:] == ["write"] else 0
        status, body = c.call(0x04, struct.pack("<IIQII", int(args[0], 0), int(args[1], 0),
                                                 int(args[2], 0), flags, 0))
        pa, fault, _ = struct.unpack("<QII", body) if len(body) == 16 else (0, 0, 0)
        print(json.dumps({"status": name_of(status), "physical": hex(pa), "fault": fault}))
        return 0
    if cmd == "write":
        c = Conn(path, ROLE_HOST)
        status, _ = c.call(0x03, struct.pack("<QQII", int(args[0], 0), int(args[1], 0),
                                              int(args[2]), 0))
        print(json.dumps({"status": name_of(status)}))
        return 0
    if cmd == "read":
        c = Conn(path, ROLE_HOST)
        status, body = c.call(0x02, struct.pack("<QII", int(args[0], 0), int(args[1]), 0))
        print(json.dumps({"status": name_of(status), "value": hex(struct.unpack("<Q", body)[0])
                          if len(body) == 8 else None}))
        return 0
    if cmd == "stats":
        c = Conn(path, ROLE_HOST)
        status, body = c.call(0x20)
        print(body.decode() if status == 0 else json.dumps({"status": name_of(status)}))
        return 0 if status == 0 else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
