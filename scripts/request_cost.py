#!/usr/bin/env python3
"""What one request costs the daemon: pipelined READ/WRITE pairs against a running smmu-hypd, with the
daemon's CPU time per request read from /proc/PID/stat before and after.

For instruction and allocation counts, run it under perf against the daemon's pid, e.g.
    perf probe -x /lib/x86_64-linux-gnu/libc.so.6 malloc      # once
    perf stat -e instructions:u,probe_libc:malloc -p PID -- scripts/request_cost.py --pid PID
The client does not decode the answers (it only counts their bytes), so at high depth the daemon,
not this script, is the bottleneck. Profiling aid, not a test: smmu-bench is the benchmark.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients", "python"))
import smmu_client as sc  # noqa: E402


def daemon_cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])  # utime, stime in clock ticks


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--socket", default=os.environ.get("SMMU_HYPD_SOCKET", sc.DEFAULT_SOCKET))
    p.add_argument("--pid", type=int, required=True, help="the daemon's pid (for its CPU time)")
    p.add_argument("--depth", type=int, default=256, help="requests per batch (default 256)")
    p.add_argument("--requests", type=int, default=500_000, help="requests in all (default 500000)")
    p.add_argument("--read-offset", type=lambda s: int(s, 0), default=0x20, help="READ offset in window 0 (IDR0)")
    p.add_argument("--write-offset", type=lambda s: int(s, 0), default=None,
                   help="WRITE offset in window 0 (default: context bank 0's MAIR0)")
    args = p.parse_args()

    client = sc.SMMUClient(args.socket)
    window = client.hello(sc.Role.HOST, "request-cost").windows[0]
    cb0 = window.size // 2  # context banks start halfway into the window
    write_offset = args.write_offset if args.write_offset is not None else cb0 + 0x38
    batch = b"".join(
        sc.encode_frame(sc.Opcode.READ, i, sc.read_payload(window.base + args.read_offset)) if i % 2 == 0
        else sc.encode_frame(sc.Opcode.WRITE, i, sc.write_payload(window.base + write_offset, 0xF404_FF44))
        for i in range(args.depth))
    reads = (args.depth + 1) // 2
    answer_bytes = reads * 24 + (args.depth - reads) * 16

    batches = max(1, args.requests // args.depth)
    u0, s0 = daemon_cpu(args.pid)
    for _ in range(batches):
        client.sock.sendall(batch)
        got = 0
        while got < answer_bytes:
            chunk = client.sock.recv(1 << 20)
            if not chunk:
                sys.exit("the daemon closed the connection")
            got += len(chunk)
    u1, s1 = daemon_cpu(args.pid)
    n = batches * args.depth
    tick = os.sysconf("SC_CLK_TCK")
    print(f"{n} requests at depth {args.depth}: daemon user {(u1 - u0) / tick / n * 1e6:.2f} us/request, "
          f"system {(s1 - s0) / tick / n * 1e6:.2f} us/request")


if __name__ == "__main__":
    main()
