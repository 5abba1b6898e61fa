"""Fuzzing (property tests): the parsers and validators of what a user hands pnn (drives, instrument
profiles, perturbation strings, data files) give a valid result or a ``ValueError`` with a message,
never another exception, whatever the input.

Every test is derandomized (a fixed seed: CI cannot flake) and kept to a modest number of
examples; none has a deadline, so a loaded machine cannot fail one.
"""

import gzip
import json
import math
import struct
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from pnn.data.images import parse_idx  # noqa: E402
from pnn.data.vowels import parse_hillenbrand, parse_hillenbrand_csv  # noqa: E402
from pnn.drivers.profile import PROFILE_DIR, Profile, load_profile  # noqa: E402
from pnn.layer import LayerSpec, validate_input  # noqa: E402
from pnn.perturb import PERTURBATIONS, parse_perturbations  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, derandomize=True)
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _refused_cleanly(call):
    """Run ``call()``; return its result, or ``None`` when it raised a ValueError with a
    message. Any other exception propagates (and fails the test)."""
    try:
        return call()
    except ValueError as e:
        assert str(e).strip(), f"{type(e).__name__} without a message"
        return None


# ------------------------------------------------------------------------------ drives
SPEC = LayerSpec(n_in=3, n_out=2, lo=-1.0, hi=2.0, name="fuzzed")
scalars = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30),
                    st.booleans(), st.none(), st.text(max_size=3), st.complex_numbers())
nested = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=20)
arrays = hnp.arrays(dtype=st.one_of(hnp.floating_dtypes(), hnp.integer_dtypes(),
                                    hnp.boolean_dtypes(), hnp.complex_number_dtypes()),
                    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))


@FUZZ
@given(x=st.one_of(nested, arrays))
def test_validate_input_accepts_exactly_the_valid_drives_or_says_why(x):
    out = _refused_cleanly(lambda: validate_input(SPEC, x))
    if out is not None:
        assert out is x
        v = np.asarray(x)
        assert v.ndim == 2 and v.shape[1] == 3 and len(v) >= 1
        assert np.issubdtype(v.dtype, np.number) and not np.iscomplexobj(v)
        assert np.all(np.isfinite(v)) and v.min() >= -1 - 1e-6 and v.max() <= 2 + 1e-6


# ------------------------------------------------------------------------------ profiles
SHIPPED = tomllib.loads((PROFILE_DIR / "emulator.toml").read_text())
toml_values = st.one_of(
    st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.text(max_size=12),
    st.sampled_from(["{hi:d}", "{lo[0]}", "{x.y}", "{max_amplitude:.6f}", "{", "}", "{}", "h",
                     "B", "d", "raise", "clip", "mean", "@py", "\n", ""]),
    st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=6)), max_size=3))


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) \
            else repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, list):
        if len({type(i) for i in v}) > 1:  # TOML 1.0 allows mixed arrays; keep it simple
            v = [str(i) for i in v]
        return "[" + ", ".join(_toml_value(i) for i in v) + "]"
    return str(v)


def _to_toml(d: dict) -> str:
    lines = []

    def table(prefix, t):
        scalars_ = {k: v for k, v in t.items() if not isinstance(v, dict)}
        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in scalars_.items())
        for k, v in t.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}" if prefix else k, v)

    table("", d)
    return "\n".join(lines) + "\n"


def _keys(d, prefix=()):
    for k, v in d.items():
        yield (*prefix, k)
        if isinstance(v, dict):
            yield from _keys(v, (*prefix, k))


KEYS = sorted(_keys(SHIPPED))


@st.composite
def mutated_profiles(draw):
    """The shipped profile with a few keys set to random values, removed, or added."""
    d = json.loads(json.dumps(SHIPPED, default=str).replace("Infinity", "1e999"))
    d["safety"]["max_rate_hz"] = math.inf
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(KEYS))
        parent = d
        for k in key[:-1]:
            parent = parent.get(k) if isinstance(parent.get(k), dict) else {}
        action = draw(st.sampled_from(["set", "set", "set", "drop", "add"]))
        if action == "drop":
            parent.pop(key[-1], None)
        elif action == "add":
            parent[draw(st.sampled_from(["extra", "max_batchh", "lo", "datatype"]))] = \
                draw(toml_values)
        else:
            parent[key[-1]] = draw(toml_values)
    return _to_toml(d)


def _load_text(text: str):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzzed.toml"
        path.write_text(text)
        return _refused_cleanly(lambda: load_profile(path))


def test_the_serializer_round_trips_the_shipped_profile():
    assert isinstance(_load_text(_to_toml(SHIPPED)), Profile)


@FUZZ
@given(text=mutated_profiles())
def test_a_mutated_profile_loads_or_is_refused_with_a_value_error(text):
    profile = _load_text(text)
    assert profile is None or isinstance(profile, Profile)


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list("[]=.\"'#\n abc_09-+{}:,")) | st.characters(),
                    max_size=80))
def test_random_text_as_a_profile_is_refused_with_a_value_error(text):
    profile = _load_text(text)  # raises (fails) on anything but a ValueError
    assert profile is None or isinstance(profile, Profile)


# ------------------------------------------------------------------------------ perturbations
names = st.sampled_from(sorted(PERTURBATIONS) + ["wobble", ""])
keys = st.sampled_from(["std", "rate", "factor", "channels", "seed", "p", "x", "", "std "])
values = st.one_of(st.sampled_from(["0.02", "-1", "inf", "nan", "1e999", "[0,3]", "[", "]",
                                    "true", "none", "", "0x10", "[1,[2]]"]),
                   st.floats().map(repr), st.integers().map(str))


@st.composite
def perturbation_strings(draw):
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        part = draw(names)
        kv = [f"{draw(keys)}={draw(values)}" for _ in range(draw(st.integers(0, 3)))]
        if kv:
            part += ":" + ",".join(kv)
        parts.append(part)
    return draw(st.sampled_from([",", ";", ", "])).join(parts)


@FUZZ
@given(text=st.one_of(perturbation_strings(), st.text(max_size=40)))
def test_perturbation_strings_parse_or_are_refused_with_a_value_error(text):
    specs = _refused_cleanly(lambda: parse_perturbations(text))
    if specs is not None:
        assert isinstance(specs, list)
        assert all(s.name in PERTURBATIONS for s in specs)


# ------------------------------------------------------------------------------ data files
VOWDATA = (FIXTURES / "vowdata_small.dat").read_text()
TOKENS = ["inf", "nan", "-inf", "1e999", "", "15", "1544", "x", "0", "-3", "w01", "m99zz", ",",
          "\t", "1.5.2"]


@st.composite
def damaged(draw, text: str):
    """``text`` cut short, with tokens replaced, lines dropped or duplicated."""
    lines = text.splitlines(keepends=True)
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["token", "drop", "dup", "junk"]))
        if kind == "token":
            parts = lines[i].split(" ")
            j = draw(st.integers(0, len(parts) - 1))
            parts[j] = draw(st.sampled_from(TOKENS))
            lines[i] = " ".join(parts)
        elif kind == "drop":
            del lines[i]
            if not lines:
                lines = [""]
        elif kind == "dup":
            lines.insert(i, lines[i])
        else:
            lines.insert(i, draw(st.text(max_size=20)) + "\n")
    out = "".join(lines)
    if draw(st.booleans()):
        out = out[:draw(st.integers(0, len(out)))]
    return out


def _check_rows(rows):
    assert rows
    for r in rows:
        assert len(r["features"]) == 12
        assert all(isinstance(v, float) and math.isfinite(v) for v in r["features"])


@FUZZ
@given(text=st.one_of(damaged(VOWDATA), st.text(max_size=200)))
def test_hillenbrand_text_parses_or_is_refused_with_a_value_error(text):
    rows = _refused_cleanly(lambda: parse_hillenbrand(text, origin="fuzzed.dat"))
    if rows is not None:
        _check_rows(rows)


def _csv_of(rows) -> str:
    head = "speaker,vowel," + ",".join(f"F{i}" for i in range(12)) + "\n"
    return head + "".join(f"{r['speaker']},{r['vowel']}," + ",".join(f"{v:g}" for v in
                                                                     r["features"]) + "\n"
                          for r in rows)


CSV = _csv_of(parse_hillenbrand(VOWDATA))


@FUZZ
@given(text=st.one_of(damaged(CSV.replace(",", " ")).map(lambda t: t.replace(" ", ",")),
                      damaged(CSV), st.text(max_size=200)))
def test_hillenbrand_csv_parses_or_is_refused_with_a_value_error(text):
    assert parse_hillenbrand_csv(CSV)  # the undamaged file is valid
    rows = _refused_cleanly(lambda: parse_hillenbrand_csv(text, origin="fuzzed.csv"))
    if rows is not None:
        _check_rows(rows)


@st.composite
def idx_bytes(draw):
    """IDX data with a random header (type, dimensions, sizes), body length, maybe gzip'd."""
    code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x0A, 0xFF]))
    dims = draw(st.lists(st.integers(0, 5) | st.just(2**32 - 1), min_size=0, max_size=3))
    magic = bytes([0, draw(st.sampled_from([0, 0, 1])), code, len(dims)])
    body = draw(st.binary(max_size=200))
    data = magic + struct.pack(f">{len(dims)}I", *dims) + body
    if draw(st.booleans()):
        data = gzip.compress(data)
        if draw(st.booleans()):
            data = data[:draw(st.integers(0, len(data)))]
    return data


@FUZZ
@given(data=st.one_of(idx_bytes(), st.binary(max_size=64)))
def test_idx_bytes_parse_or_are_refused_with_a_value_error(data):
    arr = _refused_cleanly(lambda: parse_idx(data))
    if arr is not None:
        assume(arr.size < 10**6)
        assert isinstance(arr, np.ndarray) and arr.ndim >= 1 and arr.flags.writeable
