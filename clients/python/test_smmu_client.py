"""Tests of smmu_client.py: codec tests that run standalone, and an end-to-end test against the
daemon binary named by $SMMU_HYPD_BIN (e.g. .build/debug/smmu-hypd), skipped when it is unset.

    python3 -m unittest -v clients/python/test_smmu_client.py
    SMMU_HYPD_BIN=.build/debug/smmu-hypd python3 -m unittest -v clients/python/test_smmu_client.py
"""

import os
import pathlib
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import smmu_client as sc  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]


class CodecTests(unittest.TestCase):
    def test_header_layout_is_little_endian_at_spec_offsets(self):
        self.assertEqual(
            sc.encode_header(0x84, 0x04030201, 16, status=8),
            bytes([0x53, 0x4D, 1, 0x84, 1, 2, 3, 4, 8, 0, 0, 0, 16, 0, 0, 0]))
        h = sc.decode_header(sc.encode_header(0x02, 0xFFFFFFFF, 16))
        self.assertEqual((h.magic, h.version, h.opcode, h.tag, h.status, h.length), (0x4D53, 1, 2, 0xFFFFFFFF, 0, 16))

    def test_request_payload_sizes_match_the_spec(self):
        cases = {
            sc.Opcode.HELLO: sc.hello_payload(sc.Role.HOST, "x" * 64),
            sc.Opcode.READ: sc.read_payload(0x8000020, 4),
            sc.Opcode.WRITE: sc.write_payload(0x8000000, 0x201C36, 4),
            sc.Opcode.DMA: sc.dma_payload(1, 0x7F, 0x1000, sc.DMAFlag.WRITE),
            sc.Opcode.MEM_READ: sc.mem_read_payload(0x80000000, 64),
            sc.Opcode.MEM_WRITE: sc.mem_write_payload(0x80000000, b"abc"),
            sc.Opcode.MEM_MAP: sc.mem_map_payload(0x80000000, 0x200000, 0),
            sc.Opcode.VM_DONATE: sc.vm_donate_payload(1, 0x90000000, 0x1000),
            sc.Opcode.VM_ASSIGN_STREAM: sc.vm_assign_payload(1, 0, 0x29),
            sc.Opcode.VM_DESTROY: sc.vm_destroy_payload(1),
        }
        expected = {sc.Opcode.HELLO: 72, sc.Opcode.READ: 16, sc.Opcode.WRITE: 24, sc.Opcode.DMA: 24,
                    sc.Opcode.MEM_READ: 16, sc.Opcode.MEM_WRITE: 19, sc.Opcode.MEM_MAP: 24,
                    sc.Opcode.VM_DONATE: 24, sc.Opcode.VM_ASSIGN_STREAM: 12, sc.Opcode.VM_DESTROY: 4}
        for op, payload in cases.items():
            self.assertEqual(len(payload), expected[op], op.name)
            self.assertTrue(sc.request_size_ok(op, len(payload)), op.name)
        self.assertFalse(sc.request_size_ok(sc.Opcode.HELLO, 73))
        self.assertFalse(sc.request_size_ok(sc.Opcode.READ, 15))
        self.assertFalse(sc.request_size_ok(sc.Opcode.STATS, 1))
        self.assertFalse(sc.request_size_ok(0x7E, 0))
        with self.assertRaises(ValueError):
            sc.hello_payload(sc.Role.HOST, "x" * 65)

    def test_field_placement(self):
        self.assertEqual(struct.unpack("<QQII", sc.write_payload(0x10, 0xAABB, 8)), (0x10, 0xAABB, 8, 0))
        self.assertEqual(struct.unpack("<IIQII", sc.dma_payload(2, 3, 0x4000, 5)), (2, 3, 0x4000, 5, 0))
        self.assertEqual(struct.unpack("<IIQQ", sc.vm_donate_payload(7, 0x1000, 0x2000)), (7, 0, 0x1000, 0x2000))
        self.assertEqual(sc.mem_write_payload(0x20, b"\x01\x02")[8:12], b"\x02\x00\x00\x00")

    def test_hello_response_round_trip(self):
        windows = [sc.Window(0x8000000, 0x1000000, 0x10000, 120, 120, "niso1a"),
                   sc.Window(0x10000000, 0x1000000, 0x10000, 120, 120, "iso")]
        payload = sc.encode_hello_response(1, sc.State.FINALIZED, windows)
        self.assertEqual(len(payload), 16 + 64)
        self.assertEqual(payload[16 + 24:16 + 32], b"niso1a\0\0")
        self.assertEqual(sc.decode_hello(payload), sc.Hello(1, 1, windows))
        with self.assertRaises(sc.ProtocolError):
            sc.decode_hello(payload[:-1])

    def test_dma_and_event_decoding(self):
        self.assertEqual(sc.decode_dma(struct.pack("<QII", 0x80001000, 7, 0)), sc.DMAResult(0x80001000, 7))
        self.assertEqual(sc.decode_event(struct.pack("<III", 1, 5, 1)), sc.Event(1, 5, 1))
        with self.assertRaises(sc.ProtocolError):
            sc.decode_dma(b"\0" * 8)

    def test_decoder_handles_every_split_point(self):
        stream = (sc.encode_frame(0x82, 1, struct.pack("<Q", 0x7C001E80))
                  + sc.encode_frame(0x83, 2)
                  + sc.encode_frame(sc.Opcode.EVENT, 0, struct.pack("<III", 0, 1, 1)))
        for cut in range(len(stream) + 1):
            d = sc.FrameDecoder()
            got = []
            for chunk in (stream[:cut], stream[cut:]):
                d.feed(chunk)
                got.extend(d.frames())
            self.assertEqual([f.header.tag for f in got], [1, 2, 0], cut)
            self.assertEqual(got[0].payload, struct.pack("<Q", 0x7C001E80))
            self.assertEqual(d.buffered, 0)

    def test_decoder_refuses_a_bad_magic(self):
        d = sc.FrameDecoder()
        d.feed(b"\x54\x4D" + sc.encode_frame(0x82, 1)[2:])
        with self.assertRaises(sc.ProtocolError):
            list(d.frames())


def daemon_binary():
    path = os.environ.get("SMMU_HYPD_BIN")
    return path if path else None


@unittest.skipUnless(daemon_binary(), "end-to-end test skipped: set SMMU_HYPD_BIN to the smmu-hypd binary "
                                      "(e.g. SMMU_HYPD_BIN=.build/debug/smmu-hypd)")
class EndToEndTests(unittest.TestCase):
    """Starts smmu-hypd on a private socket with the Tegra234 config and talks to it."""

    @classmethod
    def setUpClass(cls):
        binary = pathlib.Path(daemon_binary())
        if not binary.is_absolute():
            binary = (REPO / binary) if (REPO / binary).exists() else binary.resolve()
        cls.tmp = tempfile.mkdtemp(prefix="smmu-py-")
        cls.socket_path = os.path.join(cls.tmp, "smmu-hypd.sock")
        cls.log = open(os.path.join(cls.tmp, "daemon.log"), "w+")
        cls.proc = subprocess.Popen(
            [str(binary), "--socket", cls.socket_path, "--finalize-delay", "0",
             "--config", str(REPO / "Config" / "tegra234.yaml")],
            stdout=cls.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            if cls.proc.poll() is not None:
                cls.log.seek(0)
                raise RuntimeError(f"smmu-hypd exited with {cls.proc.returncode}: {cls.log.read()}")
            if os.path.exists(cls.socket_path):
                try:
                    with sc.SMMUClient(cls.socket_path, timeout=5) as c:
                        if c.hello(sc.Role.HOST, "py-e2e-wait").state == sc.State.FINALIZED:
                            break
                except (OSError, sc.SMMUError):
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError("smmu-hypd did not finalize within 20 s")
            time.sleep(0.05)

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        try:
            cls.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            cls.proc.kill()
            cls.proc.wait()
        cls.log.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def host(self):
        c = sc.SMMUClient(self.socket_path, timeout=10)
        self.addCleanup(c.close)
        return c, c.hello(sc.Role.HOST, "py-e2e")

    def test_hello_lists_tegra234_windows(self):
        _, hello = self.host()
        self.assertEqual(hello.server_version, 1)
        self.assertEqual(hello.state, sc.State.FINALIZED)
        self.assertEqual(len(hello.windows), 5)
        for w in hello.windows:
            self.assertEqual((w.num_cb, w.num_smrg), (120, 120), w)
            self.assertEqual(w.page_size, 0x10000, w)
            self.assertEqual(w.size, 0x1000000, w)
        self.assertIn(0x8000000, [w.base for w in hello.windows])

    def test_idr0_read_shows_the_host_view(self):
        c, hello = self.host()
        idr0 = c.read(hello.windows[0].base + 0x20)
        self.assertEqual(idr0 & 0xFF, 120, hex(idr0))  # NUMSMRG after the hypervisor's reservations
        self.assertTrue(idr0 & (1 << 27), "SMS")
        self.assertTrue(idr0 & (1 << 30) or idr0 & (1 << 29), "S1TS or S2TS")
        idr1 = c.read(hello.windows[0].base + 0x24)
        self.assertEqual(idr1 & 0xFF, 120, hex(idr1))  # NUMCB

    def test_smr_write_reads_back(self):
        c, hello = self.host()
        smr3 = hello.windows[0].base + 0x800 + 4 * 3
        value = (0x7F80 << 16) | 0x0E  # VALID clear: accepted whatever ID and MASK (G2)
        c.write(smr3, value)
        self.assertEqual(c.read(smr3), value)
        c.write(smr3, 0)
        self.assertEqual(c.read(smr3), 0)

    def test_reserved_context_bank_write_is_denied(self):
        c, hello = self.host()
        cb127_sctlr = hello.windows[0].base + 0x800000 + 127 * 0x10000
        with self.assertRaises(sc.SMMUError) as ctx:
            c.write(cb127_sctlr, 0x1)
        self.assertEqual(ctx.exception.status, sc.Status.DENIED)
        # The connection stays usable after a refusal.
        self.assertEqual(c.read(hello.windows[0].base + 0x24) & 0xFF, 120)

    def test_pipelined_reads_come_back_in_order(self):
        c, hello = self.host()
        idr0 = hello.windows[0].base + 0x20
        frames = c.pipeline([(sc.Opcode.READ, sc.read_payload(idr0, 4))] * 200)
        self.assertEqual(len(frames), 200)
        values = {struct.unpack("<Q", f.payload)[0] for f in frames}
        self.assertTrue(all(f.header.status == sc.Status.OK for f in frames))
        self.assertEqual(len(values), 1)

    def test_bad_access_keeps_fixed_read_size(self):
        c, hello = self.host()
        frame = c.call(sc.Opcode.READ, sc.read_payload(hello.windows[0].base + 0x20, 2))
        self.assertEqual(frame.header.status, sc.Status.BAD_ACCESS)
        self.assertEqual(frame.payload, b"\0" * 8)

    def test_bad_magic_is_malformed_then_closed(self):
        c, _ = self.host()
        frame = bytearray(sc.encode_frame(sc.Opcode.READ, 0x1234, sc.read_payload(0x8000020)))
        frame[0] = 0x00
        c.send_raw(bytes(frame))
        reply = c.recv_frame()
        self.assertEqual(reply.header.status, sc.Status.MALFORMED)
        self.assertEqual((reply.header.tag, reply.header.length), (0x1234, 0))
        self.assertTrue(c.wait_closed(5), "connection left open after MALFORMED")

    def test_wrong_length_is_malformed_then_closed(self):
        c, _ = self.host()
        c.send_raw(sc.encode_frame(sc.Opcode.READ, 9, b"\0" * 15))
        reply = c.recv_frame()
        self.assertEqual((reply.header.status, reply.header.tag), (sc.Status.MALFORMED, 9))
        self.assertTrue(c.wait_closed(5))

    def test_unknown_opcode_is_unsupported_and_connection_stays(self):
        c, hello = self.host()
        c.send_raw(sc.encode_frame(0x7E, 5, b"\xAA" * 3000))
        reply = c.recv_frame()
        self.assertEqual((reply.header.status, reply.header.tag, reply.header.length), (sc.Status.UNSUPPORTED, 5, 0))
        self.assertEqual(c.read(hello.windows[0].base + 0x24) & 0xFF, 120)

    def test_events_follow_the_global_fault_line(self):
        host, hello = self.host()
        w = 1
        base = hello.windows[w].base
        host.write(base + 0x000, 0x00201C36)  # sCR0 as Linux leaves it: GFIE and USFCFG set
        host.write(base + 0x048, 0xFFFFFFFF)  # sGFSR W1C: line low
        ev = sc.SMMUClient(self.socket_path, timeout=10)
        self.addCleanup(ev.close)
        ev.hello(sc.Role.HOST, "py-events")
        stream = ev.events()
        device = sc.SMMUClient(self.socket_path, timeout=10)
        self.addCleanup(device.close)
        device.hello(sc.Role.DEVICE, "py-device")
        result = device.dma(w, 0x55, 0x1000)  # no SMR matches: unidentified stream, sGFSR.USF
        self.assertEqual(result.fault, 1)
        ev.sock.settimeout(5)
        self.assertIn(sc.Event(w, 0, 1), self._events_until(stream, sc.Event(w, 0, 1)))
        host.write(base + 0x048, host.read(base + 0x048))  # the handler's W1C lowers the line
        self.assertIn(sc.Event(w, 0, 0), self._events_until(stream, sc.Event(w, 0, 0)))

    @staticmethod
    def _events_until(stream, wanted, limit=64):
        seen = []
        for event in stream:
            seen.append(event)
            if event == wanted or len(seen) >= limit:
                break
        return seen

    def test_mem_map_takes_a_sealed_memfd_and_refuses_a_file_that_could_shrink(self):
        c, _ = self.host()
        fd = sc.sealed_memfd(0x4000)
        self.addCleanup(os.close, fd)
        os.pwrite(fd, b"from python", 0x1000)
        c.mem_map(0x80600000, 0x4000, 0, fd)
        self.assertEqual(c.mem_read(0x80601000, 11), b"from python")
        with self.assertRaises(OSError):
            os.ftruncate(fd, 0)   # the seal holds: the daemon's mapping can never lose its pages
        unsealed = os.memfd_create("unsealed")
        self.addCleanup(os.close, unsealed)
        os.ftruncate(unsealed, 0x4000)
        with self.assertRaises(sc.SMMUError) as refused:
            c.mem_map(0x80700000, 0x4000, 0, unsealed)
        self.assertEqual(refused.exception.status, sc.Status.INVALID)
        with self.assertRaises(sc.SMMUError) as alias:
            c.mem_map(0x80800000, 0x1000, 0x1000, fd)
        self.assertEqual(alias.exception.status, sc.Status.DENIED)

    def test_requests_before_hello_are_forbidden(self):
        c = sc.SMMUClient(self.socket_path, timeout=10)
        self.addCleanup(c.close)
        frame = c.call(sc.Opcode.READ, sc.read_payload(0x8000020))
        self.assertEqual(frame.header.status, sc.Status.FORBIDDEN)
        self.assertEqual(frame.payload, b"\0" * 8)


if __name__ == "__main__":
    unittest.main()
