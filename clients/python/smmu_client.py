"""A Python 3 client of the smmu-hypd wire protocol, version 1 (standard library only).

Written from docs/protocol-v1.md alone: every message is a 16-byte little-endian header
(magic 0x4D53, version 1, opcode, tag, status, length) and `length` payload bytes. Requests may be
pipelined; the daemon answers each exactly once, in order.

    with SMMUClient("/run/smmu-hypd/smmu-hypd.sock") as c:
        hello = c.hello(Role.HOST, "my-vmm")
        idr0 = c.read(hello.windows[0].base + 0x20)
"""

import enum
import os
import fcntl
import socket
import struct
from collections import namedtuple

MAGIC = 0x4D53
VERSION = 1
HEADER = struct.Struct("<HBBIII")  # magic, version, opcode, tag, status, length
HEADER_SIZE = HEADER.size  # 16
MAX_PAYLOAD = 65536
RESPONSE_BIT = 0x80
DEFAULT_SOCKET = "/run/smmu-hypd/smmu-hypd.sock"


class Opcode(enum.IntEnum):
    HELLO = 0x01
    READ = 0x02
    WRITE = 0x03
    DMA = 0x04
    MEM_READ = 0x05
    MEM_WRITE = 0x06
    MEM_MAP = 0x07
    VM_CREATE = 0x10
    VM_DONATE = 0x11
    VM_ASSIGN_STREAM = 0x12
    VM_DESTROY = 0x13
    STATS = 0x20
    DUMP = 0x21
    FINALIZE = 0x22
    PROT_FINALIZE = 0x25
    EVENTS = 0x30
    EVENT = 0xB0  # event messages on an EVENTS connection


class Status(enum.IntEnum):
    OK = 0
    DEFERRED = 1
    DENIED = 2
    BAD_ADDRESS = 3
    BAD_ACCESS = 4
    MALFORMED = 5
    UNSUPPORTED = 6
    FORBIDDEN = 7
    FAULT = 8
    INVALID = 9
    SHUTTING_DOWN = 10


class Role(enum.IntEnum):
    HOST = 1
    DEVICE = 2
    ADMIN = 3


class State(enum.IntEnum):
    NOT_FINALIZED = 0
    FINALIZED = 1
    STOPPING = 2


class DMAFlag(enum.IntFlag):
    WRITE = 1
    EXEC = 2
    PRIV = 4


DMA_FAULTS = {
    1: "unidentified stream", 2: "stream configured to fault", 3: "translation", 4: "access flag",
    5: "permission", 6: "address size", 7: "ownership", 8: "multiple SMRs match",
}

# Request payload sizes: an int is exact; a (low, high) pair bounds a variable payload.
REQUEST_SIZES = {
    Opcode.HELLO: (8, 8 + 64), Opcode.READ: 16, Opcode.WRITE: 24, Opcode.DMA: 24, Opcode.MEM_READ: 16,
    Opcode.MEM_WRITE: (16, MAX_PAYLOAD), Opcode.MEM_MAP: 24, Opcode.VM_CREATE: 0, Opcode.VM_DONATE: 24,
    Opcode.VM_ASSIGN_STREAM: 12, Opcode.VM_DESTROY: 4, Opcode.STATS: 0, Opcode.DUMP: 0, Opcode.FINALIZE: 0,
    Opcode.PROT_FINALIZE: 0,
    Opcode.EVENTS: 0,
}
# Fixed response payload sizes (always present, zero-filled unless OK; a DMA FAULT fills the fault).
FIXED_RESPONSE_SIZES = {Opcode.READ: 8, Opcode.DMA: 16, Opcode.VM_CREATE: 4}

Header = namedtuple("Header", "magic version opcode tag status length")
Frame = namedtuple("Frame", "header payload")
Window = namedtuple("Window", "base size page_size num_cb num_smrg name")
Hello = namedtuple("Hello", "server_version state windows")
DMAResult = namedtuple("DMAResult", "pa fault")
Event = namedtuple("Event", "window line level")


class ProtocolError(Exception):
    """The daemon sent something protocol v1 does not allow."""


class SMMUError(Exception):
    """The daemon answered a request with a status other than OK."""

    def __init__(self, status, opcode, payload=b""):
        self.status = Status(status) if status in Status._value2member_map_ else status
        self.opcode = opcode
        self.payload = payload
        name = self.status.name if isinstance(self.status, Status) else str(status)
        super().__init__(f"{Opcode(opcode).name if opcode in Opcode._value2member_map_ else hex(opcode)}: {name}")


# --- codec -------------------------------------------------------------------------------------

def encode_header(opcode, tag, length, status=0, magic=MAGIC, version=VERSION):
    return HEADER.pack(magic, version, opcode, tag, status, length)


def decode_header(data):
    return Header(*HEADER.unpack_from(data, 0))


def encode_frame(opcode, tag, payload=b"", status=0):
    return encode_header(opcode, tag, len(payload), status) + payload


def hello_payload(role, name):
    raw = name.encode("utf-8")
    if len(raw) > 64:
        raise ValueError("HELLO name over 64 bytes")
    return struct.pack("<II", int(role), 0) + raw


def read_payload(address, width=4):
    return struct.pack("<QII", address, width, 0)


def write_payload(address, value, width=4):
    return struct.pack("<QQII", address, value & 0xFFFFFFFFFFFFFFFF, width, 0)


def dma_payload(window, stream, iova, flags=0):
    return struct.pack("<IIQII", window, stream, iova, int(flags), 0)


def mem_read_payload(address, length):
    return struct.pack("<QII", address, length, 0)


def mem_write_payload(address, data):
    return struct.pack("<QII", address, len(data), 0) + bytes(data)


def sealed_memfd(size, name="smmu-hypd-ram"):
    """A memfd of `size` bytes sealed against shrinking and growing, as MEM_MAP requires (QEMU's
    memory-backend-memfd seals guest RAM the same way). The caller owns the returned fd."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
    except BaseException:
        os.close(fd)
        raise
    return fd


def mem_map_payload(address, size, offset):
    return struct.pack("<QQQ", address, size, offset)


def vm_donate_payload(vm, address, size):
    return struct.pack("<IIQQ", vm, 0, address, size)


def vm_assign_payload(vm, window, stream):
    return struct.pack("<III", vm, window, stream)


def vm_destroy_payload(vm):
    return struct.pack("<I", vm)


def request_size_ok(opcode, length):
    """Whether a request payload of `length` bytes is allowed for `opcode`."""
    size = REQUEST_SIZES.get(opcode)
    if size is None:
        return False
    if isinstance(size, tuple):
        return size[0] <= length <= size[1]
    return length == size


def decode_hello(payload):
    if len(payload) < 16:
        raise ProtocolError(f"HELLO response of {len(payload)} bytes")
    version, state, count, _ = struct.unpack_from("<IIII", payload, 0)
    if len(payload) != 16 + 32 * count:
        raise ProtocolError(f"HELLO response of {len(payload)} bytes for {count} windows")
    windows = []
    for i in range(count):
        base, size, page, ncb, nsmrg, name = struct.unpack_from("<QQIHH8s", payload, 16 + 32 * i)
        windows.append(Window(base, size, page, ncb, nsmrg, name.split(b"\0", 1)[0].decode("ascii", "replace")))
    return Hello(version, state, windows)


def encode_hello_response(version, state, windows):
    out = struct.pack("<IIII", version, state, len(windows), 0)
    for w in windows:
        out += struct.pack("<QQIHH8s", w.base, w.size, w.page_size, w.num_cb, w.num_smrg, w.name.encode("ascii")[:8])
    return out


def decode_dma(payload):
    if len(payload) != 16:
        raise ProtocolError(f"DMA response of {len(payload)} bytes")
    pa, fault, _ = struct.unpack("<QII", payload)
    return DMAResult(pa, fault)


def decode_event(payload):
    if len(payload) != 12:
        raise ProtocolError(f"event of {len(payload)} bytes")
    return Event(*struct.unpack("<III", payload))


class FrameDecoder:
    """Splits a byte stream into frames; feed() any chunks, then frames() yields complete ones."""

    def __init__(self):
        self._buf = bytearray()

    def feed(self, data):
        self._buf += data

    def frames(self):
        while len(self._buf) >= HEADER_SIZE:
            header = decode_header(self._buf)
            if header.magic != MAGIC or header.version != VERSION or header.length > MAX_PAYLOAD:
                raise ProtocolError(f"bad frame header {header}")
            end = HEADER_SIZE + header.length
            if len(self._buf) < end:
                return
            payload = bytes(self._buf[HEADER_SIZE:end])
            del self._buf[:end]
            yield Frame(header, payload)

    @property
    def buffered(self):
        return len(self._buf)


# --- client ------------------------------------------------------------------------------------

class SMMUClient:
    """A blocking client on one connection. Non-OK statuses raise SMMUError (DMA FAULT excepted)."""

    def __init__(self, path=DEFAULT_SOCKET, timeout=30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self._decoder = FrameDecoder()
        self._pending = []
        self._tag = 1
        self.greeting = None

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # raw frames

    def next_tag(self):
        tag = self._tag
        self._tag = self._tag + 1 if self._tag < 0xFFFFFFFF else 1  # 0 is the events' tag
        return tag

    def send_raw(self, data, fds=()):
        if fds:
            sent = self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])
            if sent < len(data):
                self.sock.sendall(data[sent:])
        else:
            self.sock.sendall(data)

    def recv_frame(self):
        """The next frame (response or event); raises ConnectionError if the daemon closed."""
        while not self._pending:
            self._pending.extend(self._decoder.frames())
            if self._pending:
                break
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed by the daemon")
            self._decoder.feed(data)
        return self._pending.pop(0)

    def wait_closed(self, timeout=5.0):
        """True if the daemon closes the connection within `timeout` (data it sends is discarded)."""
        saved = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            while True:
                try:
                    data = self.sock.recv(65536)
                except socket.timeout:
                    return False
                except ConnectionResetError:
                    return True
                if not data:
                    return True
        finally:
            self.sock.settimeout(saved)

    # request/response

    def call(self, opcode, payload=b"", fds=()):
        """Sends one request; returns its response Frame whatever the status."""
        tag = self.next_tag()
        self.send_raw(encode_frame(opcode, tag, payload), fds)
        frame = self.recv_frame()
        self._check(frame.header, opcode, tag)
        return frame

    def call_ok(self, opcode, payload=b"", fds=()):
        frame = self.call(opcode, payload, fds)
        if frame.header.status != Status.OK:
            raise SMMUError(frame.header.status, opcode, frame.payload)
        return frame.payload

    def pipeline(self, requests):
        """Sends [(opcode, payload), ...] in one write; returns the response Frames in order.

        The whole batch is written before any answer is read, which is safe while the answers fit
        the daemon's output allowance (megabytes: tens of thousands of requests); split larger batches.
        """
        tags = [self.next_tag() for _ in requests]
        data = b"".join(encode_frame(op, tag, p) for (op, p), tag in zip(requests, tags))
        self.sock.sendall(data)
        frames = [self.recv_frame() for _ in requests]
        for frame, (op, _), tag in zip(frames, requests, tags):
            self._check(frame.header, op, tag)
        return frames

    @staticmethod
    def _check(header, opcode, tag):
        if header.tag != tag:
            raise ProtocolError(f"response tag {header.tag}, expected {tag}")
        if header.opcode != (opcode | RESPONSE_BIT) and header.status != Status.MALFORMED:
            raise ProtocolError(f"response opcode {header.opcode:#x} to {opcode:#x}")
        size = FIXED_RESPONSE_SIZES.get(opcode)
        if size is not None and header.status not in (Status.MALFORMED, Status.UNSUPPORTED) and header.length != size:
            raise ProtocolError(f"{Opcode(opcode).name} response of {header.length} bytes")

    # typed calls

    def hello(self, role, name="python"):
        self.greeting = decode_hello(self.call_ok(Opcode.HELLO, hello_payload(role, name)))
        return self.greeting

    def read(self, address, width=4):
        return struct.unpack("<Q", self.call_ok(Opcode.READ, read_payload(address, width)))[0]

    def write(self, address, value, width=4):
        self.call_ok(Opcode.WRITE, write_payload(address, value, width))

    def dma(self, window, stream, iova, flags=0):
        """A translation fault is a result (fault != 0), not an exception."""
        frame = self.call(Opcode.DMA, dma_payload(window, stream, iova, flags))
        if frame.header.status not in (Status.OK, Status.FAULT):
            raise SMMUError(frame.header.status, Opcode.DMA)
        return decode_dma(frame.payload)

    def mem_read(self, address, length):
        return self.call_ok(Opcode.MEM_READ, mem_read_payload(address, length))

    def mem_write(self, address, data):
        self.call_ok(Opcode.MEM_WRITE, mem_write_payload(address, data))

    def mem_map(self, address, size, offset, fd):
        """Lends bytes [offset, offset+size) of `fd` as host RAM at `address`. The daemon takes only a memfd
        sealed against shrinking that holds the whole range (`sealed_memfd` makes one)."""
        self.call_ok(Opcode.MEM_MAP, mem_map_payload(address, size, offset), fds=(fd,))

    def vm_create(self):
        return struct.unpack("<I", self.call_ok(Opcode.VM_CREATE))[0]

    def vm_donate(self, vm, address, size):
        self.call_ok(Opcode.VM_DONATE, vm_donate_payload(vm, address, size))

    def vm_assign_stream(self, vm, window, stream):
        self.call_ok(Opcode.VM_ASSIGN_STREAM, vm_assign_payload(vm, window, stream))

    def vm_destroy(self, vm):
        self.call_ok(Opcode.VM_DESTROY, vm_destroy_payload(vm))

    def stats(self):
        return self.call_ok(Opcode.STATS).decode("utf-8")

    def dump(self):
        return self.call_ok(Opcode.DUMP).decode("utf-8")

    def finalize(self):
        self.call_ok(Opcode.FINALIZE)

    def prot_finalize(self):
        """The host's own pKVM finalization (finalization.mode: host; once)."""
        self.call_ok(Opcode.PROT_FINALIZE)

    def events(self):
        """Turns this connection into an event stream; yields Event tuples until the daemon closes."""
        self.call_ok(Opcode.EVENTS)
        return self._event_iter()

    def _event_iter(self):
        while True:
            try:
                frame = self.recv_frame()
            except ConnectionError:
                return
            if frame.header.opcode != Opcode.EVENT:
                raise ProtocolError(f"opcode {frame.header.opcode:#x} on an event stream")
            yield decode_event(frame.payload)
