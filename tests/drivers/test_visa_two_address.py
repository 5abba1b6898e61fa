"""Two instruments on two addresses (a virtual AWG and a virtual scope, ``ScpiEmulator.pair``):
ascii and binary traces, several channels, preamble scaling, and the profile checks at load.

Every exchange waits on replies, never on a clock: the profile's timeouts are patient (they only
bound a hang), and a dropped link is a TCP reset the host notices at once.
"""

import json
import re

import numpy as np
import pytest

from pnn.drivers.emulator import Faults, ScpiEmulator
from pnn.drivers.errors import InstrumentError, ReplyFormatError, SafetyError
from pnn.drivers.profile import PROFILE_DIR, load_profile
from pnn.drivers.visa import VisaLayer

from tests.drivers.conftest import TanhLayer

SHIPPED = (PROFILE_DIR / "emulator_pair.toml").read_text()
PATIENT = {"timeout_ms = 5000": "timeout_ms = 120000",
           "open_timeout_ms = 2000": "open_timeout_ms = 120000",
           "measure_timeout_ms = 120000": "measure_timeout_ms = 600000"}


def _profile(tmp_path, *edits, name="pair.toml"):
    """The shipped two-address profile with patient timeouts and ``(old, new)`` text edits."""
    text = SHIPPED
    for old, new in [*PATIENT.items(), *edits]:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def physics():
    return TanhLayer(5, 4)


@pytest.fixture
def x():
    return np.random.default_rng(4).random((6, 5)).astype(np.float32)


def _pair(physics, **kw):
    # max_seconds only bounds a hang: both stop when the test leaves their blocks
    return ScpiEmulator.pair(layer=physics, n_in=5, n_out=4, max_seconds=600, **kw)


def _layer(path, src, rcv, **kw):
    return VisaLayer(path, (src.resource, rcv.resource), n_in=5, n_out=4, **kw)


def test_ascii_channels_and_preamble_round_trip(tmp_path, physics, x):
    src, rcv = _pair(physics, channels=2, raw_codes=True)
    with src, rcv:
        with _layer(_profile(tmp_path), src, rcv) as layer:
            assert "Emulator-AWG" in layer.idn and "Emulator-Scope" in layer.idn
            y = layer(x)
            assert src.output_on is False  # after_batch switched the output off
    # raw codes scaled back by each channel's own preamble: equal up to float32 rounding
    np.testing.assert_allclose(y, physics(x), rtol=1e-5, atol=1e-6)
    assert layer.stats.samples == len(x) and layer.stats.retries == 0
    # the order across the two instruments: drive, arm the scope, run the AWG, wait, fetch
    s_batch = src.log.commands[src.log.commands.index("WAV:DATA <block>"):]
    assert s_batch[:6] == ["WAV:DATA <block>", "SYST:ERR?", "OUTP ON", "INIT", "*OPC?",
                           "SYST:ERR?"]
    r_batch = rcv.log.commands[rcv.log.commands.index("ARM"):]
    assert r_batch == ["ARM", "SYST:ERR?", "*OPC?",
                       "WAV:PRE? CH1", "FETC? CH1", "SYST:ERR?",
                       "WAV:PRE? CH2", "FETC? CH2", "SYST:ERR?"]
    assert src.log.commands[-2:] == ["OUTP OFF", "SYST:ERR?"]  # close(): the source is safe
    # one measurement, captured by the scope and read once per channel
    assert [m.deliveries for m in src.log.measurements] == [2]


@pytest.mark.parametrize("form, datatype", [("FORM REAL", 'datatype = "f"'),
                                            ("FORM ASC", 'datatype = "ascii"')])
def test_exact_without_scaling_in_ascii_and_binary(tmp_path, physics, x, form, datatype):
    path = _profile(tmp_path, ('"FORM ASC", "FORM:SEP SEM"]', f'"{form}", "FORM:SEP SEM"]'),
                    ('datatype = "ascii"\nseparator = ";"',
                     datatype + ('\nseparator = ";"' if "ascii" in datatype else "")))
    text = path.read_text()
    path.write_text(text[: text.rindex("[visa.readout.preamble]")])  # no preamble
    src, rcv = _pair(physics, channels=2)
    with src, rcv, _layer(path, src, rcv) as layer:
        y = layer(x)
    np.testing.assert_array_equal(y, physics(x))  # float32 in ascii (9 digits) or binary: exact


def test_the_receiver_must_be_armed_before_the_source_runs(tmp_path, physics, x):
    path = _profile(tmp_path, ('before_batch = ["ARM"]', 'before_batch = []'))
    src, rcv = _pair(physics, channels=2, raw_codes=True)
    with src, rcv:
        with pytest.raises(InstrumentError, match=r"reported 1 error\(s\) after 'FETC\? CH1': "
                                                  r"-230.*nothing captured since ARM"):
            with _layer(path, src, rcv) as layer:
                layer(x)
        assert not src.output_on


def test_wrong_separator_is_a_clear_error(tmp_path, physics, x):
    path = _profile(tmp_path, ('separator = ";"\nchannels', 'separator = ","\nchannels'))
    src, rcv = _pair(physics, channels=2, raw_codes=True)
    with src, rcv, _layer(path, src, rcv) as layer:
        with pytest.raises(ReplyFormatError, match=r"item 0 of the ascii reply to 'FETC\? CH1' "
                                                   r"is '[0-9.e+-]+;.*not a number.*"
                                                   r"visa.readout.separator = ','"):
            layer(x)
        assert layer.stats.samples == 0


def test_preamble_too_short_for_the_declared_format(tmp_path, physics, x):
    path = _profile(tmp_path, ("reference_index = 9", "reference_index = 12"))
    src, rcv = _pair(physics, channels=2, raw_codes=True)
    with src, rcv, _layer(path, src, rcv) as layer:
        with pytest.raises(ReplyFormatError, match=r"preamble reply .* to 'WAV:PRE\? CH1' has 10 "
                                                   r"field\(s\) split at ',', but visa.readout."
                                                   r"preamble.reference_index = 12 needs at "
                                                   r"least 13"):
            layer(x)


def test_short_channel_trace_is_refused(tmp_path, physics, x):
    src, rcv = _pair(physics, channels=2, raw_codes=True, receiver_faults=Faults(short_trace=True))
    with src, rcv, _layer(_profile(tmp_path), src, rcv) as layer:
        with pytest.raises(ReplyFormatError, match=r"'FETC\? CH1' returned 47 values, expected "
                                                   r"batch 6 x n_out 4 / 2 channels = 2 x "
                                                   r"points_per_feature 4 = 48"):
            layer(x)


def test_dropped_receiver_link_is_retried_once_on_both(tmp_path, physics, x):
    # the scope drops its link (a TCP reset) on the first FETC? of the second batch: both
    # instruments are re-opened and that batch is measured again; nothing waits for a timeout
    parts = np.split(x, 2)
    src, rcv = _pair(physics, channels=2, raw_codes=True)
    with src, rcv:
        with _layer(_profile(tmp_path), src, rcv) as layer:
            outs = [layer(parts[0])]
            rcv.set_faults(Faults(drop_after=3))  # ARM, SYST:ERR?, *OPC?, then WAV:PRE? dropped
            outs.append(layer(parts[1]))
    np.testing.assert_allclose(np.concatenate(outs), physics(x), rtol=1e-5, atol=1e-6)
    assert rcv.log.drops == 1 and layer.stats.retries == 1 and layer.stats.connects == 2
    assert (src.log.connections, rcv.log.connections) == (2, 2)
    assert layer.stats.samples == len(x)


def test_drive_beyond_the_limits_never_reaches_the_source(tmp_path, physics, x):
    src, rcv = _pair(physics, channels=2, raw_codes=True)
    with src, rcv, _layer(_profile(tmp_path), src, rcv) as layer:
        layer.safety.restrict(hi=0.5, max_amplitude=0.5)
        with pytest.raises(SafetyError, match=r"entries outside \[0, 0.5\]"):
            layer(x)
        assert src.log.drives == [] and "ARM" not in rcv.log.commands
    assert src.log.commands[-2:] == ["OUTP OFF", "SYST:ERR?"]


def test_one_address_given_for_two_instruments_is_refused_or_split(tmp_path):
    path = _profile(tmp_path)
    with pytest.raises(ValueError, match=r"describes two instruments .* but one resource "
                                         r"'TCPIP::1.2.3.4::INSTR' was given; give \(source, "
                                         r"receiver\)"):
        VisaLayer(path, "TCPIP::1.2.3.4::INSTR", n_in=5, n_out=4)
    # 'SOURCE+RECEIVER' in one string (as pnn train --instrument visa:... passes it)
    layer = VisaLayer(path, "TCPIP::1.2.3.4::INSTR + TCPIP::1.2.3.5::INSTR", n_in=5, n_out=4)
    assert (layer._src.resource, layer._rcv.resource) == ("TCPIP::1.2.3.4::INSTR",
                                                          "TCPIP::1.2.3.5::INSTR")
    with pytest.raises(ValueError, match=r"n_out = 5 cannot be split over the 2 channels"):
        VisaLayer(path, n_in=5, n_out=5)


def test_profile_contents_are_recorded_whole(tmp_path):
    path = _profile(tmp_path)
    layer = VisaLayer(path, n_in=5, n_out=4)
    d = json.loads(json.dumps(layer.profile_dict(), allow_nan=False))  # strict JSON
    assert d["source"] == str(path) and d["safety"]["max_rate_hz"] == "inf"
    rcv = d["visa"]["receiver"]
    assert rcv["commands"]["fetch"] == "FETC? {channel}"
    assert rcv["resource"] == "TCPIP::127.0.0.1::5026::SOCKET"
    assert d["visa"]["readout"]["preamble"]["scale_index"] == 7
    assert d["visa"]["readout"]["channels"] == ["CH1", "CH2"]
    assert d["visa"]["timeout_ms"] == 120000


def test_shipped_example_rig_profile_loads():
    p = load_profile("awg_scope_example")
    assert p.visa.two_address and p.visa.readout.channels == ("CHAN1", "CHAN2")
    assert p.visa.source.commands.safe == ("OUTP1 OFF",)
    VisaLayer(p)  # the addresses and the shape come from the profile; no I/O here


# ------------------------------------------------------------------ checks at load
BAD = [
    # (old, new, the message after "<file>: ")
    ("[visa.receiver]             # the scope", "[visa.scope]",
     r"unknown key\(s\) visa.scope"),
    ("[visa.receiver]             # the scope\nresource", "[visa.other]\nresource",
     r"unknown key"),
    ('[visa.source]               # the AWG\nresource = "TCPIP::127.0.0.1::5025::SOCKET"',
     '[visa.commands]\nidn = "*IDN?"\n[visa.source]\nresource = "TCPIP::127.0.0.1::5025::SOCKET"',
     r"visa.commands is set, but with \[visa.source\] and \[visa.receiver\] each instrument has "
     r"its own"),
    ('resource = "TCPIP::127.0.0.1::5025::SOCKET"\n', "",
     r"visa.source.resource must be set"),
    ('fetch = "FETC? {channel}"', 'fetch = ""', r"visa.receiver.commands.fetch must be set"),
    ('drive = "WAV:DATA "', 'drive = "WAV:DATA "\nfetch = "FETC?"',
     r"visa.source.commands.fetch = 'FETC\?' is not used"),
    ('datatype = "ascii"\nseparator = ";"', 'datatype = "f"\nseparator = ";"',
     r"visa.readout.separator is set but visa.readout.datatype is 'f'"),
    ('separator = ";"\nchannels', 'separator = "."\nchannels',
     r"visa.readout.separator = '.' contains '.'"),
    ('[visa.drive]\ndatatype = "f"', '[visa.drive]\ndatatype = "ascii"\ndigits = 30',
     r"visa.drive.digits must be an integer in \[1, 17\], got 30"),
    ('fetch = "FETC? {channel}"', 'fetch = "FETC?"',
     r"visa.readout.channels has 2 channels but visa.receiver.commands.fetch = 'FETC\?' has no "
     r"\{channel\}"),
    ('channels = ["CH1", "CH2"]', 'channels = ["CH1", "CH1"]',
     r"visa.readout.channels lists 'CH1' more than once"),
    ('setup = ["*RST", "*CLS", "ACQ:POIN', 'setup = ["SEL {channel}", "*CLS", "ACQ:POIN',
     r"visa.receiver.commands.setup\[0\] = 'SEL \{channel\}' uses \{channel\}, which only the "
     r"fetch query"),
    ("scale_index = 7 ", "", r"visa.readout.preamble.scale_index must be set"),
    ("reference_index = 9", "reference_index = 8",
     r"visa.readout.preamble.reference_index = 8 is the same field as "
     r"visa.readout.preamble.offset_index"),
    ('query = "WAV:PRE? {channel}"', 'query = "WAV:PRE?"',
     r"visa.readout.preamble.query = 'WAV:PRE\?' has no \{channel\}"),
    ("scale_index = 7 ", "scale_index = -1 ",
     r"visa.readout.preamble.scale_index must be an integer in \[0, 1000\], got -1"),
    ("[layer]\n", "[layer]\nn_out = 5\n",
     r"layer.n_out = 5 cannot be split evenly over the 2 channels"),
]


@pytest.mark.parametrize("old, new, message", BAD)
def test_bad_two_address_profile_is_refused_naming_file_and_key(tmp_path, old, new, message):
    path = _profile(tmp_path, (old, new))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": " + message):
        load_profile(path)


def test_only_a_source_is_refused(tmp_path):
    text = _profile(tmp_path).read_text()
    cut = text[: text.index("[visa.receiver]             # the scope")] + \
        text[text.index("[visa.drive]"): text.rindex("[visa.readout.preamble]")]
    cut = cut.replace('channels = ["CH1", "CH2"]\n', "")
    path = tmp_path / "half.toml"
    path.write_text(cut)
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": \[visa.source\] is set but "
                                         r"\[visa.receiver\] is not"):
        load_profile(path)


@pytest.mark.parametrize("drop_after, retries, measured", [
    # ARM, SYST:ERR?, *OPC?, WAV:PRE? CH1, FETC? CH1, SYST:ERR?, WAV:PRE? CH2, FETC? CH2, then
    # the SYST:ERR? after the last fetch is dropped: the data is in hand, nothing is measured
    # again; both instruments are re-opened
    (8, 0, 6),
    # the SYST:ERR? between the two channels' fetches is dropped: CH2's data is lost with the
    # scope's session, so the batch is measured again (the instrument measured 3 + 3 + 3
    # samples; the caller, the driver and the ledger count 3 + 3)
    (5, 1, 9),
])
def test_a_link_dropped_after_the_fetch_does_not_measure_again(tmp_path, physics, x, drop_after,
                                                                retries, measured):
    from pnn.cost import Ledger

    parts = np.split(x, 2)
    src, rcv = _pair(physics, channels=2, raw_codes=True)
    with src, rcv:
        with _layer(_profile(tmp_path), src, rcv) as layer:
            ledger = Ledger()
            outs = [ledger.query(layer, parts[0])]
            rcv.set_faults(Faults(drop_after=drop_after, drop_reply=True))
            outs.append(ledger.query(layer, parts[1]))
    np.testing.assert_allclose(np.concatenate(outs), physics(x), rtol=1e-5, atol=1e-6)
    assert rcv.log.drops == 1 and layer.stats.retries == retries
    assert layer.stats.connects == 2 and (src.log.connections, rcv.log.connections) == (2, 2)
    assert ledger.physical_queries == layer.stats.samples == len(x)
    assert src.log.samples_measured == measured
    # every measurement's two channels were read once (the lost one: CH1 only)
    assert [m.deliveries for m in src.log.measurements] == ([2, 1, 2] if retries else [2, 2])
