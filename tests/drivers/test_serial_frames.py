"""The framed serial protocol: encoding, CRC, and resynchronisation over garbage."""

import struct

import numpy as np
import pytest

from pnn.drivers.serial import START, Frame, MsgType, ParseStats, crc16, encode_frame, pop_frame


def any_frame(type_, length):
    return length <= 4096


def replies(type_, length):
    """What a host waits for: a reply type with a bounded length."""
    return type_ in (MsgType.HELLO_OK, MsgType.MEASURE_OK, MsgType.SAFE_OK, MsgType.ERROR) \
        and length <= 4096


def test_crc16_ccitt_false_check_value():
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF


def test_frame_layout():
    raw = encode_frame(MsgType.MEASURE, 7, b"\x01\x02\x03")
    assert raw[0] == START and raw[1] == 0x10 and raw[2] == 7
    assert struct.unpack_from("<H", raw, 3)[0] == 3
    assert raw[5:8] == b"\x01\x02\x03"
    assert struct.unpack(">H", raw[8:])[0] == crc16(raw[1:8])


def test_roundtrip_and_stream_of_frames():
    frames = [Frame(MsgType.HELLO_OK, 1, b"abc"), Frame(MsgType.SAFE_OK, 2, b""),
              Frame(MsgType.MEASURE_OK, 3, bytes(range(200)))]
    buf = bytearray(b"".join(f.encode() for f in frames))
    out = [pop_frame(buf, any_frame) for _ in frames]
    assert out == frames and buf == bytearray()
    assert pop_frame(buf, any_frame) is None


def test_partial_frame_waits_for_more_bytes():
    raw = encode_frame(MsgType.SAFE_OK, 9, b"hello")
    buf = bytearray(raw[:6])
    assert pop_frame(buf, any_frame) is None
    assert buf == bytearray(raw[:6])  # kept, not discarded
    buf.extend(raw[6:])
    assert pop_frame(buf, any_frame) == Frame(MsgType.SAFE_OK, 9, b"hello")


def test_garbage_with_start_bytes_is_skipped():
    good = encode_frame(MsgType.MEASURE_OK, 5, b"\x00\x11\x22")
    rng = np.random.default_rng(0)
    junk = bytearray(rng.integers(0, 256, 64, dtype=np.uint8).tobytes())
    junk[::7] = bytes([START]) * len(junk[::7])
    buf = bytearray(junk) + bytearray(good)
    stats = ParseStats()
    assert pop_frame(buf, replies, stats) == Frame(MsgType.MEASURE_OK, 5, b"\x00\x11\x22")
    assert stats.skipped >= 64 - 8  # nearly all junk bytes skipped one way or another
    assert buf == bytearray()


def test_bad_checksum_is_skipped_and_counted():
    bad = bytearray(encode_frame(MsgType.MEASURE_OK, 1, b"\x01\x02"))
    bad[-1] ^= 0xFF
    good = encode_frame(MsgType.MEASURE_OK, 2, b"\x03\x04")
    buf = bad + bytearray(good)
    stats = ParseStats()
    assert pop_frame(buf, any_frame, stats) == Frame(MsgType.MEASURE_OK, 2, b"\x03\x04")
    assert stats.bad_checksum == 1


def test_implausible_header_is_treated_as_noise():
    # a START byte followed by a header claiming 60000 bytes would stall the reader: refused
    noise = bytes([START, MsgType.MEASURE_OK, 0]) + struct.pack("<H", 60000)
    good = encode_frame(MsgType.SAFE_OK, 3)
    buf = bytearray(noise + good)
    assert pop_frame(buf, lambda t, n: n <= 100) == Frame(MsgType.SAFE_OK, 3, b"")


def test_encode_refuses_oversized_payload():
    with pytest.raises(ValueError, match="exceeds the protocol's 65535"):
        encode_frame(MsgType.MEASURE, 0, bytes(70000))
