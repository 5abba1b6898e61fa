"""pnn serial device, MicroPython: the device side of pnn's framed serial protocol.

Copy this file to a MicroPython board with DACs and ADCs as ``main.py``, set the pins and the
drive range in ``main()`` below, and ``pnn.drivers.SerialLayer`` trains the physical system wired
between the board's outputs and inputs. The protocol is specified in ``drivers/serial.py`` (the
host side); every message, both ways, is one frame::

    START 0xA5 | TYPE | SEQ | LEN (u16 LE) | PAYLOAD (LEN bytes) | CRC-16/CCITT-FALSE (u16 BE)

    HELLO    0x01  u32 session id          -> HELLO_OK   0x81  u16 n_in, u16 n_out, u16 max_batch,
                                                               f32 lo, f32 hi, ASCII id (<= 64 B)
    MEASURE  0x10  u16 batch, batch x n_in -> MEASURE_OK 0x90  u16 batch, batch x n_out f32
                   f32 (sample-major)
    SAFE     0x11  (empty)                 -> SAFE_OK    0x91  (empty)
    (any)                                  -> ERROR      0xEE  i16 code, ASCII (<= 200 B)

The same file runs on the board and, under CPython, in pnn's test suite (``tests/drivers/
test_micropython_device.py``), which drives :class:`Device` with ``SerialLayer`` over a
pseudo-terminal and a simulated :class:`Board`. Everything above ``main()`` therefore uses only
what both Pythons have: ``struct``, ``math``, bytes and plain classes.

The hardware is behind a tiny interface, :class:`Board`: ``measure(drives)`` (drive each vector,
read the inputs, return one measured vector per drive) and ``safe()`` (every output to zero).
:class:`DacAdcBoard` implements it with ``machine.DAC`` and ``machine.ADC``.

Rules the device keeps (the same as the C++ example in ``../pnn_serial_device/``):

* Receiving: scan to a START byte (anything before it is garbage), refuse an implausible TYPE or
  LEN by skipping one byte, wait for the whole frame, check the CRC; on a mismatch skip one byte
  and scan again (the START byte may itself have been noise).
* Safety: a MEASURE whose drives are not all finite and inside ``[lo, hi]`` is refused with
  ERROR -3 before anything is driven; outputs are driven only while a batch is measured
  (``safe()`` after every batch). HELLO announces ``[lo, hi]`` rounded to float32 toward the
  inside (the host keeps to it), and :class:`Device` refuses a board whose range or sizes are not
  valid. :class:`DacAdcBoard` refuses a drive range its DACs cannot produce (``lo < 0``) and
  computes every DAC code of a batch, each checked to lie in ``[0, 2**dac_bits - 1]``, before
  writing any: a code outside is ERROR -4 with the outputs safe, never written.
* Idempotent resends: the last MEASURE/SAFE request (its exact bytes, SEQ included) is remembered
  with its reply; the same bytes again are answered from memory without driving anything (a lost
  reply costs a resend, never a second measurement). HELLO with a new session id forgets it.
"""

import struct

try:
    from math import isfinite
except ImportError:  # a MicroPython build without it
    def isfinite(v):
        return v == v and v - v == 0.0

START = 0xA5
HELLO = 0x01
MEASURE = 0x10
SAFE = 0x11
HELLO_OK = 0x81
MEASURE_OK = 0x90
SAFE_OK = 0x91
ERROR = 0xEE
HEAD = 5  # START, TYPE, SEQ, LEN
MAX_ERROR_TEXT = 200
MAX_ID_TEXT = 64

# error codes (the same as pnn's serial emulator and the C++ example)
E_PAYLOAD = -1  # MEASURE payload does not hold batch x n_in float32
E_BATCH = -2    # batch > max_batch
E_RANGE = -3    # a drive outside [lo, hi] or not finite: nothing driven
E_MEASURE = -4  # the board failed to measure


def crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF); crc16(b"123456789") == 0x29B1."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def f32_inside(v, up):
    """``v`` as a float32 on the inside of a range: the smallest float32 >= v (``up``, for a lower
    limit) or the largest float32 <= v (for an upper limit). ``v`` is finite and within float32."""
    f = struct.unpack("<f", struct.pack("<f", v))[0]
    if f == v or (f > v) == up:
        return f
    (u,) = struct.unpack("<I", struct.pack("<f", f))
    if f == 0.0:
        u = 0x00000001 if up else 0x80000001  # the smallest subnormal of the right sign
    elif (f > 0.0) == up:
        u += 1  # away from zero
    else:
        u -= 1  # toward zero
    return struct.unpack("<f", struct.pack("<I", u))[0]


def check_board(board):
    """Refuse a board the protocol cannot describe truthfully: ``ValueError`` naming the field."""
    for name in ("n_in", "n_out", "max_batch"):
        v = getattr(board, name)
        if not (isinstance(v, int) and 1 <= v <= 0xFFFF):
            raise ValueError("board.%s = %r: expected an integer in 1..65535" % (name, v))
    lo, hi = board.lo, board.hi
    if not (isfinite(lo) and isfinite(hi) and -3.4e38 < lo < hi < 3.4e38):
        raise ValueError("board drive range [%r, %r]: expected finite lo < hi (float32)"
                         % (lo, hi))


def frame(type_, seq, payload=b""):
    """One frame's bytes."""
    body = struct.pack("<BBH", type_, seq, len(payload)) + payload
    return bytes([START]) + body + struct.pack(">H", crc16(body))


class Board:
    """The hardware interface. ``n_in`` drive channels, ``n_out`` measured channels, drives in
    ``[lo, hi]``, at most ``max_batch`` drive vectors a frame, an identity string ``ident``."""

    n_in = n_out = max_batch = 0
    lo = hi = 0.0
    ident = "pnn device"

    def measure(self, drives):
        """Drive each vector of ``drives`` (lists of n_in floats, already checked to lie in
        [lo, hi]) in turn and read the inputs: a list of one n_out-list a drive."""
        raise NotImplementedError

    def safe(self):
        """Every output to zero."""
        raise NotImplementedError


class Device:
    """The protocol: feed it the bytes received, it calls ``write(bytes)`` with the replies."""

    def __init__(self, board, write):
        check_board(board)
        self.board = board
        self.write = write
        self.rx = b""
        self.session = None
        self.memo = None  # (request bytes, reply bytes) of the last MEASURE/SAFE answered
        self.max_in = 2 + 4 * board.max_batch * board.n_in  # the largest MEASURE payload

    def feed(self, data):
        self.rx += data
        while True:
            i = self.rx.find(bytes([START]))
            if i < 0:
                self.rx = b""
                return
            self.rx = self.rx[i:]
            if len(self.rx) < HEAD:
                return
            type_, seq, n = struct.unpack("<BBH", self.rx[1:HEAD])
            if not self.plausible(type_, n):
                self.rx = self.rx[1:]
                continue
            total = HEAD + n + 2
            if len(self.rx) < total:
                return  # wait for the rest
            raw = self.rx[:total]
            if struct.unpack(">H", raw[-2:])[0] != crc16(raw[1:-2]):
                self.rx = self.rx[1:]
                continue
            self.rx = self.rx[total:]
            self.dispatch(type_, seq, raw[HEAD:-2], raw)

    def plausible(self, type_, n):
        if type_ == HELLO:
            return n == 4
        if type_ == SAFE:
            return n == 0
        if type_ == MEASURE:
            return 2 <= n <= self.max_in
        return False

    def dispatch(self, type_, seq, payload, raw):
        if type_ == HELLO:
            (session,) = struct.unpack("<I", payload)
            if session != self.session:  # a new host session
                self.session, self.memo = session, None
            b = self.board
            ident = b.ident.encode()[:MAX_ID_TEXT]
            # as float32 toward the inside: a drive within what is announced is accepted
            lo, hi = f32_inside(b.lo, True), f32_inside(b.hi, False)
            self.write(frame(HELLO_OK, seq, struct.pack("<HHHff", b.n_in, b.n_out, b.max_batch,
                                                        lo, hi) + ident))
            return
        if self.memo is not None and self.memo[0] == raw:
            self.write(self.memo[1])  # a resend: answer from memory, drive nothing
            return
        self.memo = None
        if type_ == SAFE:
            self.board.safe()
            reply = frame(SAFE_OK, seq)
        else:
            reply = self.measure(seq, payload)
            if reply is None:
                return  # an error was sent: not remembered, a resend is checked afresh
        self.memo = (raw, reply)
        self.write(reply)

    def error(self, seq, code, text):
        self.write(frame(ERROR, seq, struct.pack("<h", code) + text.encode()[:MAX_ERROR_TEXT]))

    def measure(self, seq, payload):
        b = self.board
        (batch,) = struct.unpack("<H", payload[:2])
        if batch > b.max_batch:  # first: a frame longer than max_batch's is never received
            self.error(seq, E_BATCH, "batch %d > max_batch %d" % (batch, b.max_batch))
            return None
        if batch == 0 or len(payload) != 2 + 4 * batch * b.n_in:
            self.error(seq, E_PAYLOAD, "MEASURE payload does not hold batch x n_in float32")
            return None
        values = struct.unpack("<%df" % (batch * b.n_in), payload[2:])
        for v in values:  # check all before driving any
            if not (isfinite(v) and b.lo <= v <= b.hi):
                self.error(seq, E_RANGE, "drive outside [%g, %g]" % (b.lo, b.hi))
                return None
        drives = [list(values[k * b.n_in:(k + 1) * b.n_in]) for k in range(batch)]
        try:
            measured = b.measure(drives)
        except Exception as e:  # noqa: BLE001 - reported to the host, never fatal
            b.safe()
            self.error(seq, E_MEASURE, "measurement failed: %s" % e)
            return None
        b.safe()  # outputs are on only while a batch is measured
        out = [float(v) for y in measured for v in y]
        if len(out) != batch * b.n_out:
            self.error(seq, E_MEASURE, "the board returned %d values, expected %d"
                       % (len(out), batch * b.n_out))
            return None
        return frame(MEASURE_OK, seq, struct.pack("<H%df" % len(out), batch, *out))


def serve(device, read):
    """Feed ``device`` whatever ``read()`` returns until it returns nothing (end of stream)."""
    while True:
        data = read()
        if not data:
            return
        device.feed(data)


# --------------------------------------------------------------------------- the board (MicroPython)
class DacAdcBoard(Board):
    """Drives on ``machine.DAC`` pins (``dac_bits`` wide; a drive of ``hi`` is full scale, code
    ``2**dac_bits - 1``, and 0 is code 0), measurements from ``machine.ADC`` pins (``read_u16``,
    scaled to [0, 1]), ``settle_us`` microseconds between setting the drives and reading.

    A DAC produces only ``[0, full scale]``: ``lo`` must be >= 0 (``ValueError`` otherwise), and
    every code is checked before it is written (:meth:`dac_code`)."""

    def __init__(self, dac_pins, adc_pins, lo=0.0, hi=1.0, dac_bits=8, settle_us=100,
                 max_batch=8, ident="pnn MicroPython device"):
        if not (isinstance(dac_bits, int) and 1 <= dac_bits <= 16):
            raise ValueError("dac_bits = %r: expected an integer in 1..16" % (dac_bits,))
        if not (isfinite(lo) and isfinite(hi) and 0.0 <= lo < hi):
            raise ValueError("drive range [%r, %r]: a DAC drives 0 (code 0) to hi (full scale), "
                             "so 0 <= lo < hi is required" % (lo, hi))
        from machine import ADC, DAC, Pin

        self.dacs = [DAC(Pin(p)) for p in dac_pins]
        self.adcs = [ADC(Pin(p)) for p in adc_pins]
        self.n_in, self.n_out = len(self.dacs), len(self.adcs)
        self.lo, self.hi, self.max_batch, self.ident = lo, hi, max_batch, ident
        self.full = (1 << dac_bits) - 1
        self.settle_us = settle_us
        self.safe()

    def dac_code(self, v):
        """The DAC code of drive ``v``: ``round(v / hi * (2**dac_bits - 1))``.

        Raises ValueError (nothing is written) unless ``v`` lies in ``[max(lo, 0), hi]`` and the
        code in ``[0, 2**dac_bits - 1]``, whatever ``lo`` and ``hi`` were changed to."""
        if not (isfinite(v) and 0.0 <= v and self.lo <= v <= self.hi):
            raise ValueError("drive %r outside the DAC's range [%r, %r]"
                             % (v, max(self.lo, 0.0), self.hi))
        code = int(v / self.hi * self.full + 0.5)
        if not 0 <= code <= self.full:
            raise ValueError("DAC code %d outside [0, %d]" % (code, self.full))
        return code

    def measure(self, drives):
        import time

        # every code of the batch first: one that does not fit refuses the batch before any write
        codes = [[self.dac_code(v) for v in x] for x in drives]
        out = []
        for row in codes:
            for dac, code in zip(self.dacs, row):
                dac.write(code)
            time.sleep_us(self.settle_us)  # the physics settles (a board's timing, not a protocol's)
            out.append([adc.read_u16() / 65535 for adc in self.adcs])
        return out

    def safe(self):
        for dac in self.dacs:
            dac.write(0)


def main():
    """On the board: serve the protocol on the USB serial port (stdin/stdout)."""
    import sys

    import micropython

    micropython.kbd_intr(-1)  # binary frames contain 0x03: not a Ctrl-C
    board = DacAdcBoard(dac_pins=(25, 26), adc_pins=(34, 35))  # ADAPT: e.g. an ESP32's two DACs
    out = sys.stdout.buffer
    serve(Device(board, out.write), lambda: sys.stdin.buffer.read(1))


if __name__ == "__main__":
    main()
