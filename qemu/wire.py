#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The few protocol v1 exchanges qemu/guest-test.sh needs, over clients/python/smmu_client.py.

    wire.py SOCKET wait-ready SECONDS            HELLO until the daemon says finalized; print its windows
    wire.py SOCKET dma WINDOW SID IOVA [write]   one DMA as role device; print status and fault
    wire.py SOCKET mc-dma CLIENT IOVA [write]    one MC_DMA (a memory client's access) as role device
    wire.py SOCKET write ADDR VALUE WIDTH        one host WRITE; print the status
    wire.py SOCKET stats                         STATS as role host; print the JSON
    wire.py SOCKET dump                          DUMP as role admin; print the JSON
    wire.py SOCKET hello SECONDS                 HELLO once the daemon listens, whatever its state; print it
    wire.py SOCKET prot-finalize                 PROT_FINALIZE as role host; print the status
Each prints one JSON object on stdout; the exit status is 0 when the exchange happened.
The HELLO name is $WIRE_NAME (default "guest-test"): the audit's SMMU_CLIENT.
"""
import json
import os
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients", "python"))
from smmu_client import (DMAFlag, Opcode, ProtocolError, Role, SMMUClient, SMMUError, State,  # noqa: E402
                         Status, write_payload)

NAME = os.environ.get("WIRE_NAME", "guest-test")
MC_DMA = 0x0C   # docs/protocol-v1.md, "0x0C MC_DMA (device; extension)"


def connect(path, role, name=NAME):
    client = SMMUClient(path, timeout=10)
    client.hello(role, name)
    return client


def wait_ready(path, seconds, finalized=True):
    deadline = time.monotonic() + seconds
    last = "no connection"
    while time.monotonic() < deadline:
        try:
            with connect(path, Role.HOST, "guest-test-probe") as c:
                if c.greeting.state == State.FINALIZED or not finalized:
                    return {"state": int(c.greeting.state), "windows": [w._asdict() for w in c.greeting.windows]}
                last = "state %d" % c.greeting.state
        except (OSError, ProtocolError, SMMUError) as e:  # the daemon may not listen yet
            last = str(e)
        time.sleep(0.1)
    raise SystemExit(json.dumps({"error": "not finalized: " + last}))


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, cmd, args = argv[1], argv[2], argv[3:]
    if cmd == "wait-ready":
        print(json.dumps(wait_ready(path, float(args[0]))))
    elif cmd == "dma":
        flags = DMAFlag.WRITE if args[3:] == ["write"] else 0
        with connect(path, Role.DEVICE) as c:
            r = c.dma(int(args[0], 0), int(args[1], 0), int(args[2], 0), flags)
        print(json.dumps({"status": "FAULT" if r.fault else "OK", "physical": hex(r.pa), "fault": r.fault}))
    elif cmd == "mc-dma":
        flags = DMAFlag.WRITE if args[2:] == ["write"] else 0
        with connect(path, Role.DEVICE) as c:
            frame = c.call(MC_DMA, struct.pack("<IIQII", int(args[0], 0), 0, int(args[1], 0), flags, 0))
        pa, fault, route = struct.unpack("<QII", frame.payload) if len(frame.payload) == 16 else (0, 0, 0)
        print(json.dumps({"status": Status(frame.header.status).name, "physical": hex(pa), "fault": fault,
                          "stream": hex(route & 0xFFFF), "window": (route >> 16) & 0xFF,
                          "around_smmu": bool(route >> 31)}))
    elif cmd == "write":
        with connect(path, Role.HOST) as c:
            frame = c.call(Opcode.WRITE, write_payload(int(args[0], 0), int(args[1], 0), int(args[2])))
        print(json.dumps({"status": Status(frame.header.status).name}))
    elif cmd == "stats":
        with connect(path, Role.HOST) as c:
            print(c.stats())
    elif cmd == "dump":
        with connect(path, Role.ADMIN) as c:
            print(c.dump())
    elif cmd == "hello":
        print(json.dumps(wait_ready(path, float(args[0]), finalized=False)))
    elif cmd == "prot-finalize":
        with connect(path, Role.HOST) as c:
            frame = c.call(Opcode.PROT_FINALIZE, b"")
        print(json.dumps({"status": Status(frame.header.status).name}))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
