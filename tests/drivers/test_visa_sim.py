"""The SCPI command sequences of VisaLayer, without hardware.

Two kinds of test, as pymeasure/QCoDeS do it:

* pyvisa-sim instruments (``sim_instruments.yaml``): connect, setup with error-queue checks,
  identity and shape checks, and the safe state after ``close()``.
* a recorded command/reply protocol (:class:`ProtocolResource`): every call VisaLayer makes for
  one batch, binary blocks included, must match the expected transcript exactly.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import pyvisa

from pnn.drivers.errors import InstrumentConnectionError, InstrumentError, ReplyFormatError
from pnn.drivers.profile import load_profile
from pnn.drivers.visa import VisaLayer, parse_error_reply

YAML = Path(__file__).with_name("sim_instruments.yaml")
AWG = "TCPIP::10.0.0.5::5025::SOCKET"
OTHER = "TCPIP::10.0.0.6::5025::SOCKET"
BADQUEUE = "TCPIP::10.0.0.7::5025::SOCKET"

SIM_PROFILE = """
[profile]
name = "sim awg"

[layer]
n_in = 5
n_out = 3

[safety]
lo = 0.0
hi = 1.0
max_amplitude = 0.8

[visa]
timeout_ms = 200
idn_contains = "PNN"

[visa.commands]
shape = "CONF:CHAN?"
setup = ["*RST", "*CLS", "SOUR:VOLT:LIM {max_amplitude:.6f}", "ACQ:POIN {points_per_feature}",
         "OUTP ON"]
drive = "WAV:DATA "
fetch = "FETC?"
safe = ["OUTP OFF"]

[visa.readout]
points_per_feature = 2

[visa.drive]
scale = 0.8
"""


@pytest.fixture
def sim_profile(tmp_path):
    f = tmp_path / "sim_awg.toml"
    f.write_text(SIM_PROFILE)
    return load_profile(f)


@pytest.fixture
def rm():
    rm = pyvisa.ResourceManager(f"{YAML}@sim")
    yield rm
    rm.close()


def _probe(rm, query):
    res = rm.open_resource(AWG, read_termination="\n", write_termination="\n")
    try:
        return res.query(query).strip()
    finally:
        res.close()


def test_connect_runs_setup_and_close_leaves_output_off(rm, sim_profile):
    layer = VisaLayer(sim_profile, AWG, resource_manager=rm)
    assert not layer.connected and layer.idn is None  # no I/O in the constructor
    with layer:
        assert layer.idn == "PNN,SimAWG,0001,1.0"
        assert _probe(rm, "OUTP?") == "ON"
        assert float(_probe(rm, "SOUR:VOLT:LIM?")) == pytest.approx(0.8)
        assert _probe(rm, "ACQ:POIN?") == "2"
        assert layer.stats.connects == 1
    assert not layer.connected
    assert _probe(rm, "OUTP?") == "OFF"


def test_setup_error_raises_with_the_instruments_message(rm, sim_profile):
    bad = dataclasses.replace(sim_profile.visa.commands,
                              setup=("*RST", "SOUR:VOLT:LIM 5.0", "OUTP ON"))
    prof = dataclasses.replace(sim_profile,
                               visa=dataclasses.replace(sim_profile.visa, commands=bad))
    layer = VisaLayer(prof, AWG, resource_manager=rm)
    with pytest.raises(InstrumentError, match=r"after 'SOUR:VOLT:LIM 5.0': -100,\"Command error\""):
        layer.connect()
    # the failing step stopped the setup: the output was never switched on
    assert _probe(rm, "OUTP?") == "OFF"


def test_wrong_instrument_is_refused(rm, sim_profile):
    with pytest.raises(InstrumentConnectionError, match="identifies as 'ACME,Oscilloscope"):
        VisaLayer(sim_profile, OTHER, resource_manager=rm).connect()


def test_shape_mismatch_is_refused(rm, sim_profile):
    prof = dataclasses.replace(sim_profile,
                               visa=dataclasses.replace(sim_profile.visa, idn_contains=""))
    with pytest.raises(ReplyFormatError, match="has 4 inputs and 3 outputs, but the layer was "
                                               "built for n_in=5, n_out=3"):
        VisaLayer(prof, OTHER, resource_manager=rm).connect()


def test_malformed_error_queue_reply_raises(rm, sim_profile):
    with pytest.raises(ReplyFormatError, match="'all good!' is not of the form"):
        VisaLayer(sim_profile, BADQUEUE, resource_manager=rm).connect()


def test_unopenable_resource_fails_clearly(rm, sim_profile):
    with pytest.raises(InstrumentConnectionError, match="cannot open 'NOT-A-RESOURCE'"):
        VisaLayer(sim_profile, "NOT-A-RESOURCE", resource_manager=rm).connect()


def test_call_before_connect_is_refused(sim_profile):
    layer = VisaLayer(sim_profile, AWG)
    with pytest.raises(InstrumentError, match="not connected"):
        layer(np.zeros((1, 5)))


def test_parse_error_reply():
    assert parse_error_reply('+0,"No error"') == (0, "No error")
    assert parse_error_reply('-222,"Data out of range;x"\n') == (-222, "Data out of range;x")
    assert parse_error_reply("0") == (0, "")
    with pytest.raises(ReplyFormatError):
        parse_error_reply("No error")


# ---------------------------------------------------------------------------- expected protocol
class ProtocolResource:
    """A pyvisa resource that checks every call against an expected transcript."""

    def __init__(self, transcript):
        self.transcript = list(transcript)
        self.timeout = 200
        self.closed = False
        self.query_timeouts = {}

    def _next(self, kind, message):
        assert self.transcript, f"unexpected {kind}({message!r}): the transcript is exhausted"
        exp_kind, exp_msg, reply = self.transcript.pop(0)
        assert (kind, message) == (exp_kind, exp_msg)
        return reply

    def write(self, message):
        self._next("write", message)

    def query(self, message):
        self.query_timeouts[message] = self.timeout
        return self._next("query", message)

    def write_binary_values(self, message, values, datatype="f", is_big_endian=False):
        self._next("write_binary", (message, tuple(values), datatype, is_big_endian))

    def query_binary_values(self, message, datatype="f", is_big_endian=False, container=list,
                            **kw):
        return container(self._next("query_binary", (message, datatype, is_big_endian)))

    def close(self):
        self.closed = True


class ProtocolRM:
    def __init__(self, resource):
        self.resource = resource
        self.opened = []

    def open_resource(self, name, **kw):
        self.opened.append((name, kw))
        return self.resource


def test_batch_command_sequence_matches_the_emulator_profile():
    prof = load_profile("emulator")
    ok = '+0,"No error"'
    x = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    y = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    trace = np.repeat(y[:, :, None], 4, axis=2).ravel()  # points_per_feature = 4
    transcript = [
        ("query", "*IDN?", "PNN,Emulator-SCPI,x,0.1"),
        ("write", "*RST", None), ("query", "SYST:ERR?", ok),
        ("write", "*CLS", None), ("query", "SYST:ERR?", ok),
        ("write", "OUTP OFF", None), ("query", "SYST:ERR?", ok),
        ("write", "SOUR:VOLT:LIM 1.000000", None), ("query", "SYST:ERR?", ok),
        ("write", "ACQ:POIN 4", None), ("query", "SYST:ERR?", ok),
        ("query", "CONF:CHAN?", "2,3"),
        # one batch
        ("write_binary", ("WAV:DATA ", (0.0, 0.25, 0.5, 1.0), "f", False), None),
        ("query", "SYST:ERR?", ok),
        ("write", "OUTP ON", None), ("write", "INIT", None),
        ("query", "*OPC?", "1"),
        ("query", "SYST:ERR?", ok),
        ("query_binary", ("FETC?", "f", False), trace),
        ("query", "SYST:ERR?", ok),
        ("write", "OUTP OFF", None), ("query", "SYST:ERR?", ok),
        # close: output off, confirmed through the error queue
        ("write", "OUTP OFF", None), ("query", "SYST:ERR?", ok),
    ]
    res = ProtocolResource(transcript)
    rm = ProtocolRM(res)
    with VisaLayer(prof, "TCPIP::1.2.3.4::5025::SOCKET", n_in=2, n_out=3,
                   resource_manager=rm) as layer:
        out = layer(x)
    assert res.transcript == [] and res.closed
    np.testing.assert_array_equal(out, y.astype(np.float32))
    assert out.dtype == np.float32
    (name, kw), = rm.opened
    assert kw == dict(open_timeout=2000, timeout=5000, read_termination="\n",
                      write_termination="\n")
    # the *OPC? wait ran with the measurement timeout, then the ordinary one was restored
    assert res.query_timeouts["*OPC?"] == 120000
    assert res.query_timeouts["SYST:ERR?"] == res.timeout == 200


def test_error_after_the_drive_block_raises_and_switches_output_off():
    prof = load_profile("emulator")
    ok = '+0,"No error"'
    setup = [("query", "*IDN?", "PNN,Emulator-SCPI,x,0.1")]
    for cmd in ("*RST", "*CLS", "OUTP OFF", "SOUR:VOLT:LIM 1.000000", "ACQ:POIN 4"):
        setup += [("write", cmd, None), ("query", "SYST:ERR?", ok)]
    setup += [("query", "CONF:CHAN?", "1,1")]
    transcript = setup + [
        ("write_binary", ("WAV:DATA ", (0.5,), "f", False), None),
        ("query", "SYST:ERR?", '-222,"Data out of range"'),
        ("query", "SYST:ERR?", '-350,"Queue overflow"'),
        ("query", "SYST:ERR?", ok),
        ("write", "OUTP OFF", None),  # made safe at once
        ("write", "OUTP OFF", None), ("query", "SYST:ERR?", ok),  # and again by close()
    ]
    res = ProtocolResource(transcript)
    with VisaLayer(prof, "X", n_in=1, n_out=1, resource_manager=ProtocolRM(res)) as layer:
        with pytest.raises(InstrumentError, match=r'2 error\(s\) after \'WAV:DATA <block>\': '
                                                  r'-222,"Data out of range"; -350'):
            layer(np.array([[0.5]]))
    assert res.transcript == []


def test_a_batch_lost_to_an_error_after_output_off_is_not_counted():
    # the data was fetched, but the error queue after OUTP OFF reports an error: the caller gets
    # an exception, not the batch, so the counters must not count it either
    prof = load_profile("emulator")
    ok = '+0,"No error"'
    setup = [("query", "*IDN?", "PNN,Emulator-SCPI,x,0.1")]
    for cmd in ("*RST", "*CLS", "OUTP OFF", "SOUR:VOLT:LIM 1.000000", "ACQ:POIN 4"):
        setup += [("write", cmd, None), ("query", "SYST:ERR?", ok)]
    setup += [("query", "CONF:CHAN?", "1,1")]
    transcript = setup + [
        ("write_binary", ("WAV:DATA ", (0.5,), "f", False), None),
        ("query", "SYST:ERR?", ok),
        ("write", "OUTP ON", None), ("write", "INIT", None),
        ("query", "*OPC?", "1"), ("query", "SYST:ERR?", ok),
        ("query_binary", ("FETC?", "f", False), [2.0] * 4), ("query", "SYST:ERR?", ok),
        ("write", "OUTP OFF", None), ("query", "SYST:ERR?", '-200,"Execution error"'),
        ("query", "SYST:ERR?", ok),
        ("write", "OUTP OFF", None),  # made safe at once
        ("write", "OUTP OFF", None), ("query", "SYST:ERR?", ok),  # and again by close()
    ]
    res = ProtocolResource(transcript)
    with VisaLayer(prof, "X", n_in=1, n_out=1, resource_manager=ProtocolRM(res)) as layer:
        with pytest.raises(InstrumentError, match=r"after 'OUTP OFF': -200,\"Execution error\""):
            layer(np.array([[0.5]]))
        assert (layer.stats.batches, layer.stats.samples) == (0, 0)
    assert res.transcript == []


# ---------------------------------------------------------------------------- templates
@pytest.mark.parametrize("template, match", [
    ("*RST {hi:d}", r"'\*RST \{hi:d\}' cannot be formatted with the "
                    r"driver's values \(hi = 1.0 \(float\)\): ValueError: Unknown format code 'd'"),
    ("*RST {lo[0]}", r"'\*RST \{lo\[0\]\}' uses \{lo\[0\]\}: "
                     r"placeholders take no index or attribute \(write \{lo\}"),
    ("*RST {n_in.real}", r"uses \{n_in.real\}: placeholders take no index or attribute"),
    ("*RST {}", r"uses a positional placeholder \{\}; valid: \{n_in\}"),
    ("*RST {volts}", r"uses the unknown placeholder \{volts\}"),
    ("*RST {hi", r"is not a valid template"),
])
def test_a_template_that_would_fail_at_connect_is_refused_at_load(tmp_path, template, match):
    f = tmp_path / "awg.toml"
    f.write_text(SIM_PROFILE.replace('setup = ["*RST"', f'setup = ["{template}"'))
    with pytest.raises(ValueError, match=r"awg.toml: visa.commands.setup\[0\] = .*" + match):
        load_profile(f)


def test_templates_with_format_specs_that_suit_the_fields_load(tmp_path):
    f = tmp_path / "awg.toml"
    f.write_text(SIM_PROFILE.replace('setup = ["*RST"',
                                     'setup = ["*RST {n_in:d},{hi:.3f},{batch:04d},{{x}}"'))
    assert load_profile(f).visa.commands.setup[0] == "*RST {n_in:d},{hi:.3f},{batch:04d},{{x}}"


def test_a_template_edited_in_code_fails_at_connect_naming_its_key(rm, sim_profile):
    # dataclasses.replace skips the loader: the driver still names the file and the key
    bad = dataclasses.replace(sim_profile.visa.commands, setup=("*RST", "ACQ:POIN {hi:d}"))
    prof = dataclasses.replace(sim_profile,
                               visa=dataclasses.replace(sim_profile.visa, commands=bad))
    with pytest.raises(ValueError, match=r"sim_awg.toml: visa.commands.setup\[1\] = 'ACQ:POIN "
                                         r"\{hi:d\}' cannot be formatted"):
        VisaLayer(prof, AWG, resource_manager=rm).connect()


# ---------------------------------------------------------------- two addresses (pyvisa-sim)
SCOPE = "TCPIP::10.0.0.8::5025::SOCKET"

PAIR_PROFILE = """
[profile]
name = "sim awg + scope"

[layer]
n_in = 5
n_out = 2

[safety]
lo = 0.0
hi = 1.0
max_amplitude = 0.8

[visa]
timeout_ms = 200

[visa.source]
resource = "TCPIP::10.0.0.5::5025::SOCKET"
idn_contains = "SimAWG"

[visa.source.commands]
setup = ["*RST", "*CLS", "SOUR:VOLT:LIM {max_amplitude:.6f}", "OUTP ON"]
drive = "WAV:DATA "
safe = ["OUTP OFF"]

[visa.receiver]
resource = "TCPIP::10.0.0.8::5025::SOCKET"
idn_contains = "SimScope"

[visa.receiver.commands]
setup = ["*RST", "*CLS", "FORM ASC"]
before_batch = ["ARM"]
fetch = "FETC? {channel}"

[visa.drive]
scale = 0.8

[visa.readout]
datatype = "ascii"
separator = ";"
channels = ["CH1", "CH2"]

[visa.readout.preamble]
query = "WAV:PRE? {channel}"
scale_index = 7
offset_index = 8
reference_index = 9
"""


@pytest.fixture
def pair_profile(tmp_path):
    f = tmp_path / "sim_pair.toml"
    f.write_text(PAIR_PROFILE)
    return f


def test_two_addresses_connect_each_with_its_own_setup_and_identity(rm, pair_profile):
    with VisaLayer(pair_profile, resource_manager=rm) as layer:
        assert layer.idns == {"source": "PNN,SimAWG,0001,1.0", "receiver": "ACME,SimScope,7,2.0"}
        assert float(_probe(rm, "SOUR:VOLT:LIM?")) == pytest.approx(0.8)  # the source's setup
        assert _probe(rm, "OUTP?") == "ON"
        # the receiver's replies, read as the profile declares: ascii split at ';' (a trailing
        # separator tolerated), scaled by each channel's preamble (c - yref) * yinc + yorig
        rcv = layer._rcv
        for ch, want in (("CH1", [0.25, 1.25, 2.25, 3.25]), ("CH2", [-1.0, 0.0, 1.0, 2.0])):
            scale, offset, ref = layer._preamble(rcv, layer._template(1, ch))
            raw = layer._fetch_ascii(rcv, f"FETC? {ch}")
            np.testing.assert_allclose((raw - ref) * scale + offset, want)
    assert _probe(rm, "OUTP?") == "OFF"  # close(): the source's safe commands


def test_two_addresses_wrong_receiver_is_refused_naming_its_key(rm, pair_profile):
    text = pair_profile.read_text().replace('idn_contains = "SimScope"', 'idn_contains = "DSO"')
    pair_profile.write_text(text)
    layer = VisaLayer(pair_profile, resource_manager=rm)
    with pytest.raises(InstrumentConnectionError, match=r"'TCPIP::10.0.0.8::5025::SOCKET' "
                                                        r"identifies as 'ACME,SimScope,7,2.0', "
                                                        r"which lacks 'DSO' \(profile 'sim awg "
                                                        r"\+ scope' visa.receiver.idn_contains\)"):
        layer.connect()
    assert not layer.connected and layer._rcv.res is None and layer._src.res is None
    assert _probe(rm, "OUTP?") == "OFF"  # the source, already set up (output on), was made safe


# ---------------------------------------------------------------- a third-party simulator
ROOT = Path(__file__).resolve().parents[2]
ECHO = "TCPIP::10.0.0.9::5025::SOCKET"


def _documented(kind: str) -> str:
    """The first ``kind`` code block of docs/hardware.md's pyvisa-sim section, as written."""
    text = (ROOT / "docs" / "hardware.md").read_text()
    section = text.split("## A third-party simulator: pyvisa-sim", 1)[1].split("\n## ", 1)[0]
    blocks, lang, body = [], None, []
    for line in section.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, body = line[3:].strip(), []
            else:
                blocks.append((lang, "\n".join(body) + "\n"))
                lang = None
        elif lang is not None:
            body.append(line)
    return next(b for k, b in blocks if k == kind)


@pytest.fixture
def echo_profile(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the documented backend path is relative to the repository's root
    f = tmp_path / "sim_echo.toml"
    f.write_text(_documented("toml"))
    return f


def test_ascii_drives_through_pyvisa_sim_in_batches(echo_profile):
    x = np.random.default_rng(0).random((5, 4)).astype(np.float32)
    x[0, 0], x[1, 1] = 1.0, 0.0  # the limits themselves
    with VisaLayer(echo_profile, n_in=4, n_out=2) as layer:
        assert layer.idn == "PNN,SimEcho,0001,1.0"
        y = layer(x)
        assert layer.stats.samples == 5 and layer.stats.batches == 1
    # the echo's physics: output j = mean of drives 2j and 2j+1, from 9-digit text
    np.testing.assert_allclose(y, x.reshape(5, 2, 2).mean(axis=2), rtol=1e-7, atol=1e-9)


def test_binary_drives_to_a_text_only_simulator_fail_clearly(echo_profile):
    prof = load_profile(echo_profile)
    prof = dataclasses.replace(prof, visa=dataclasses.replace(
        prof.visa, drive=dataclasses.replace(prof.visa.drive, datatype="f")))
    with VisaLayer(prof, n_in=4, n_out=2) as layer:
        with pytest.raises(InstrumentError, match=r"could not take the binary block of 'f' "
                                                  r"\(float32\) drives: it reads writes as text "
                                                  r"\(UnicodeDecodeError: .*set \[visa.drive\] "
                                                  r"datatype = \"ascii\""):
            layer(np.full((2, 4), 0.1, np.float32))  # 0.1 as float32 holds bytes >= 0x80
        assert layer.stats.samples == 0


@pytest.mark.parametrize("old, new, match", [
    ("digits = 9", "digits = 0", r"visa.drive.digits must be an integer in \[1, 17\], got 0"),
    ('datatype = "ascii"         # decimal', 'datatype = "f"  # ',
     r"visa.drive.digits is set but visa.drive.datatype is 'f': it only applies to ascii"),
    ('separator = ","\n\n[visa.readout]', 'separator = "e"\n\n[visa.readout]',
     r"visa.drive.separator = 'e' contains 'e', which occur inside numbers"),
    ('separator = ","\n\n[visa.readout]', 'separator = "\\n"\n\n[visa.readout]',
     r"visa.drive.separator = '\\n' contains the write termination '\\n': an ascii drive "
     r"line would end"),
    # drives 0..1 mapped to 0.991..0.994: no number of 2 significant digits lies in there
    ("digits = 9", "digits = 2", None),
])
def test_ascii_drive_settings_are_checked_at_load(echo_profile, old, new, match):
    text = echo_profile.read_text()
    assert old in text
    text = text.replace(old, new)
    if match is None:
        text = text.replace("[safety]\nlo = 0.0\nhi = 1.0", "[safety]\nlo = 0.991\nhi = 0.994")
        text = text.replace('separator = ","\n\n[visa.readout]',
                            'separator = ","\nscale = 0.003\noffset = 0.991\n\n[visa.readout]')
        match = (r"lets values in \[0.991, 0.994\] through, which hold no number of "
                 r"visa.drive.digits = 2 significant digits")
    echo_profile.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_profile(echo_profile)


@pytest.mark.slow
def test_the_documented_pyvisa_sim_profile_trains_end_to_end(echo_profile, tmp_path):
    import json
    import shlex

    from pnn.cli import main

    command = shlex.split(_documented("").replace("\\\n", " "))
    assert command[:2] == ["pnn", "train"]
    args = [str(echo_profile) if a == "sim_echo.toml" else
            str(tmp_path / "sim_echo.json") if a == "sim_echo.json" else a for a in command[1:]]
    assert main(args) == 0
    rec = json.loads((tmp_path / "sim_echo.json").read_text())
    (inst,) = rec["instruments"]
    assert inst["idn"] == "PNN,SimEcho,0001,1.0"
    assert rec["cost"]["physical_queries"] == inst["driver"]["samples"] > 64
    assert inst["driver"]["batches"] > inst["driver"]["samples"] / 64  # batches above one
    assert rec["test_accuracy"] > 0.5  # three classes: better than chance through the echo
