#!/usr/bin/env python3
"""What the daemon's log says about restart mode (scripts/systemd-restart-test.sh, systemd-restart-guest-test.sh):
checkpoints (size, CPU time, how much of the journal was memory reads), RAM pages copied (asserted: none) and what
each restore replayed. Benchmark figures, printed; only the RAM copy is asserted.
Usage: restart-summary.py PREFIX DAEMON_LOG"""
import re
import sys

prefix = sys.argv[1]
text = open(sys.argv[2]).read()


def pct(v, p):
    s = sorted(v)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] if s else float("nan")
cps = [(int(b), float(e), float(f)) for b, e, f in re.findall(
    r"checkpoint \d+: (\d+) bytes, .*?capture and encode [\d.]+ ms .*?; ([\d.]+) ms of CPU\), file and store [\d.]+ ms \(([\d.]+) ms of CPU\)", text)]
for line in re.findall(r"checkpoint \d+: \d+ bytes.*", text)[:3]:
    print(prefix + ": " + line)
if cps:
    enc, sto, size = [c[1] for c in cps], [c[2] for c in cps], [c[0] for c in cps]
    print(f"{prefix}: {len(cps)} checkpoints of {min(size)}..{max(size)} bytes, CPU time: capture and encode p50 "
          f"{pct(enc, 50):.2f} ms, max {max(enc):.2f} ms; sealed file and store p50 {pct(sto, 50):.2f} ms, "
          f"max {max(sto):.2f} ms")
else:
    print(prefix + ": no checkpoint was taken")
# The memory reads journaled with the requests (MemoryReadLog): their share of each journal.
reads = [(int(j), int(r)) for j, r in re.findall(r"after (\d+) journal bytes \((\d+) of memory reads\)", text)]
if reads:
    share = [r / j for j, r in reads if j]
    print(f"{prefix}: memory reads in the journal: p50 {pct(share, 50) * 100:.1f}%, max {max(share) * 100:.1f}% of "
          f"the bytes at each checkpoint")
# RAM is in the stored ram.<i> memfds: a checkpoint copies none, so its cost does not depend on RAM contents (G8;
# `smmu-bench --state-image-only` prints the checkpoint of the worst state, every RAM page written). Asserted.
ram = [int(n) for n in re.findall(r"checkpoint \d+: .*?; (\d+) RAM pages", text)]
print(f"{prefix}: RAM pages copied into checkpoints: max {max(ram) if ram else 0} (RAM lives in the stored memfds)")
if any(ram):
    sys.exit(prefix + ": FAIL: a checkpoint copied RAM")


def seconds(s):
    return float(s.split()[0]) * (1 if s.endswith("seconds") else 1e-3 if s.endswith("ms") else 1e-6)
restores = [(int(n), seconds(t)) for n, t in re.findall(
    r"restored from the fd store: generation \d+.*?, (\d+) journal records replayed, ([\d.e-]+ \w+) in all", text)]
images = [seconds(t) for t in re.findall(r"checkpoint \d+ restored in ([\d.e-]+ \w+)", text)]
if restores:
    n, t = [r[0] for r in restores], [r[1] * 1000 for r in restores]
    print(f"{prefix}: per restore, journal records replayed p50 {pct(n, 50)}, max {max(n)}; replay p50 "
          f"{pct(t, 50):.0f} ms, max {max(t):.0f} ms")
if images:
    i = [x * 1000 for x in images]
    print(f"{prefix}: checkpoint decode and restore p50 {pct(i, 50):.0f} ms, max {max(i):.0f} ms over {len(i)}")
# Shared-memory rings (RING): per restore, the rings served on and the answers the new process published because the
# old one had journaled the request but not published its answer (the crash point between them); printed.
rings = [(int(r), int(a)) for r, a in re.findall(r"(\d+) ring\(s\) \((\d+) answer\(s\) published", text)]
if rings and any(r for r, _ in rings):
    print(f"{prefix}: rings served on: {sum(r for r, _ in rings)} over {len(rings)} restores; answers published by the "
          f"new process (request journaled, answer not yet published): {sum(a for _, a in rings)}; replayed ring "
          f"answers that differ from the published one: {text.count('the replayed ring answer differs')}")
# The replay is exact: no read it lacked, no connection closed for answers that did not line up. Asserted.
for bad in ("the replay diverged", "does not line up", "the replay regenerated"):
    if bad in text:
        sys.exit(f"{prefix}: FAIL: the log says: {next(l for l in text.splitlines() if bad in l)}")
